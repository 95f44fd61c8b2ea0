"""`longrope-convert demo`: the whole pipeline on tiny generated checkpoints, ending in a parity table."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=Path("longrope-demo"),
              show_default=True, help="Where the demo writes its checkpoints (replaced on each run).")
@click.option("--arch", "archs", multiple=True, help="Limit to these HF classes (default: all four).")
def demo(workdir: Path, archs: tuple[str, ...]) -> None:
    """Build tiny seeded checkpoints, bake example LongRoPE factors, convert them to GGUF and ONNX, and print the
    parity of every artifact against the independent reference (exit 1 on any mismatch)."""
    from .demo.models import build_demo_artifacts, build_demo_models, prepare_workdir
    from .demo.parity import demo_parity_tables

    models = build_demo_models(prepare_workdir(workdir), archs or None)
    tables, all_pass = demo_parity_tables([build_demo_artifacts(m) for m in models])
    click.echo(tables)
    if not all_pass:
        raise click.exceptions.Exit(1)
