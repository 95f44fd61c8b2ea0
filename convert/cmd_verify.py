"""STUB: replaced by the real command module."""

import click


@click.command(name="verify")
def verify() -> None:
    """(not implemented yet)"""
    raise click.UsageError("not implemented yet")
