"""`longrope-convert demo`: the whole pipeline on tiny generated checkpoints, ending in a parity table."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=Path("longrope-demo"),
              show_default=True, help="Where the demo writes its checkpoints (replaced on each run).")
@click.option("--arch", "archs", multiple=True, help="Limit to these HF classes (default: all four).")
def demo(workdir: Path, archs: tuple[str, ...]) -> None:
    """Build tiny seeded checkpoints, bake example LongRoPE factors, and print reference-vs-runtime parity."""
    from .demo import build_demo_models, prepare_workdir
    from .demo_parity import demo_parity_table

    models = build_demo_models(prepare_workdir(workdir), archs or None)
    table, all_pass = demo_parity_table(models)
    click.echo(table)
    if not all_pass:
        raise click.exceptions.Exit(1)
