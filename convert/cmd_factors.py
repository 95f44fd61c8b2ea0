"""`longrope-convert factors`: operations on factor files (today: `compose`, the progressive-extension product)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..formats.errors import display_path  # no torch, no numpy: the CLI still starts fast

if TYPE_CHECKING:  # pragma: no cover
    from ..formats.factor_compose import ComposedFactors

_FILE = click.Path(path_type=Path, dir_okay=False)


@click.group(name="factors")
def factors() -> None:
    """Operations on LongRoPE factor files."""


@factors.command(name="compose")
@click.argument("stages", nargs=-1, required=True, type=_FILE)
@click.option("-o", "--output", "out", type=_FILE, help="Output factor file (required unless --dry-run).")
@click.option("--json", "as_json", is_flag=True, help="Write a JSON list instead of one %.18e value per line.")
@click.option("--dry-run", is_flag=True, help="Print the table only; write nothing.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def compose(stages: tuple[Path, ...], out: Path | None, as_json: bool, dry_run: bool, force: bool) -> None:
    """Multiply the factor vectors of STAGE1 STAGE2 [...] per dimension (a second searched stage applied on top of
    the first, as LongRoPE's progressive 2048k extension does) and write the product to OUT.

    Each stage is read like any factor file (a config file gives its long set). The table of every stage and the
    product goes to stdout.
    """
    from ..formats.atomic_output import atomic_output_file, check_output_path
    from ..formats.factor_compose import compose_factor_files, factor_json, factor_lines

    if len(stages) < 2:
        raise click.UsageError("compose needs at least two stage files")
    if out is None and not dry_run:
        raise click.UsageError("missing -o/--output (or pass --dry-run)")
    if out is not None and not dry_run:
        check_output_path(out, list(stages), force, kind="file")  # before reading: never into an input
    composed = compose_factor_files(list(stages))
    from .inspect_report import compose_table

    click.echo(compose_table(composed))
    if dry_run:
        return
    with atomic_output_file(out, force) as tmp:
        tmp.write_text(factor_json(composed.product) if as_json else factor_lines(composed.product))
    click.echo(f"product of {len(stages)} stages written to {display_path(out)}")
