"""`longrope-convert bake`: write a hub-ready checkpoint whose config.json carries the LongRoPE factors."""

from __future__ import annotations

from pathlib import Path

import click

from .options import spec_options


@click.command()
@click.argument("src", type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@spec_options
@click.option("--copy-weights", is_flag=True,
              help="Copy weight files instead of hard-linking them (hard links share bytes with SRC).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def bake(src: Path, out: Path, spec_request, copy_weights: bool, force: bool) -> None:
    """Bake LongRoPE factors into a copy of the checkpoint SRC (weights hard-linked or copied, never rewritten)."""
    from .bake import bake_checkpoint

    bake_checkpoint(src, out, spec_request, force=force, copy_weights=copy_weights)
