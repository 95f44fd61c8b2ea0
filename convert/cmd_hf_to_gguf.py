"""STUB: replaced by the real command module."""

import click


@click.command(name="hf-to-gguf")
def hf_to_gguf() -> None:
    """(not implemented yet)"""
    raise click.UsageError("not implemented yet")
