"""`longrope-convert inspect`: print the LongRoPE spec of a checkpoint, GGUF, ONNX folder or factor file."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="inspect")
@click.argument("target", type=click.Path(path_type=Path, exists=True))
@click.argument("stages", nargs=-1, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--plot", "png", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a PNG of long/short factors vs linear interpolation and NTK.")
@click.option("--force", is_flag=True, help="Replace an existing --plot file.")
def inspect_cmd(target: Path, stages: tuple[Path, ...], png: Path | None, force: bool) -> None:
    """Show the spec as a table: factors, attention factor, switch point, effective wavelengths.

    Several factor files (progressive extension stages) show each stage and their per-dimension product."""
    from ..formats.artifact_spec import read_any_spec
    from ..formats.atomic_output import check_output_path
    from ..formats.errors import LongRopeError, display_path
    from .inspect_report import factor_file_report, plot_spec, spec_report

    if stages:
        from ..formats.factor_compose import compose_factor_files
        from .inspect_report import compose_table

        if png:
            raise LongRopeError("--plot takes one checkpoint, GGUF or ONNX folder, not several factor files")
        click.echo(compose_table(compose_factor_files([target, *stages])))
        return
    if png:
        check_output_path(png, [target], force, kind="file")  # before any output: never into TARGET, no clobbering
    spec = read_any_spec(target)
    if spec is None:
        click.echo(factor_file_report(target))
        if png:
            raise LongRopeError("--plot needs a checkpoint, GGUF or ONNX folder (a bare factor file has no scale)")
        return
    click.echo(spec_report(spec, str(target)))
    if png:
        plot_spec(spec, png, force)
        click.echo(f"plot written to {display_path(png)}")
