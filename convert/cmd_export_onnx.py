"""STUB: replaced by the real command module."""

import click


@click.command(name="export-onnx")
def export_onnx() -> None:
    """(not implemented yet)"""
    raise click.UsageError("not implemented yet")
