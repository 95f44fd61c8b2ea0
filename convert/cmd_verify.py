"""`longrope-convert verify`: the parity gate. Exit 0 all pass, 1 any mismatch, 2 bad usage or input."""

from __future__ import annotations

from pathlib import Path

import click

DEVICES = ("auto", "cpu", "cuda")  # verify.runner.DEVICES; literal so the CLI starts without torch
DTYPES = ("float32", "bfloat16", "float16")
EXIT_MISMATCH = 1
_FILE = click.Path(path_type=Path, dir_okay=False)


@click.command(name="verify")
@click.argument("src", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--gguf", "ggufs", multiple=True, type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A GGUF to run with llama.cpp (repeatable).")
@click.option("--onnx", "onnx_dirs", multiple=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="An export-onnx folder to run with onnxruntime (repeatable).")
@click.option("--target", "extra_targets", multiple=True, metavar="KIND=PATH",
              help="Any registered target kind (verify/targets.py), e.g. onnx=out/onnx (repeatable).")
@click.option("--no-transformers", is_flag=True, help="Do not check transformers itself on SRC.")
@click.option("--lengths", metavar="LIST",
              help="Comma-separated cases: N = N-token prefill, P+S = P-token prefill then S cached decode steps "
                   "(default: L_orig/2, L_orig, L_orig+1, a long length, (L_orig-1)+2).")
@click.option("--allow-beyond-max", is_flag=True,
              help="Accept --lengths past the model's max_position_embeddings (refused by default).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto: CUDA when available (reference, transformers and onnxruntime there), else CPU.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="transformers' dtype (GGUF and ONNX carry their own precision).")
@click.option("--tolerance", "tolerances", multiple=True, metavar="[KIND[/PREC].]METRIC=VALUE",
              help="Override a limit: rel_l2, kl, top1, max_abs, growth_tokens; e.g. gguf/f16.rel_l2=2e-2.")
@click.option("--reference-spec", type=click.Path(path_type=Path, exists=True),
              help="Take the truth's LongRoPE numbers from this config.json (or folder) instead of SRC's: "
                   "checks that the numbers baked into SRC are the intended ones.")
@click.option("--reference-dtype", type=click.Choice(("float64", "float32")),
              help="Reference precision (default float64; float32 on CUDA when float64 weights do not fit).")
@click.option("--start-tokens", type=click.IntRange(min=0), metavar="N",
              help="LongRoPE v1 n_hat for the truth: positions < N use plain RoPE. Checks an export-onnx "
                   "--start-tokens graph; transformers and GGUF cannot express it and are skipped.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random token ids.")
@click.option("--json", "json_out", type=_FILE, help="Write the report as JSON (verify/report_schema.json).")
@click.option("--junit", "junit_out", type=_FILE, help="Write JUnit XML, one testcase per target x case.")
@click.option("--plot", "plot_out", type=_FILE,
              help="Write a PNG of relative error against position for every target, L_orig marked.")
@click.option("--write-card", is_flag=True,
              help="Put the parity table into SRC/README.md (its own section) and the report into SRC/verify.json; "
                   "weights and config.json stay untouched.")
@click.option("--device-map", metavar="auto|balanced|sequential|FILE.json",
              help="Place transformers over several devices with accelerate (and split the reference's layers over "
                   "the visible GPUs): for models that do not fit on one GPU, e.g. 70B at 128k.")
@click.option("--force", is_flag=True, help="Replace existing --json, --junit and --plot files.")
@click.option("--no-precision-floor", is_flag=True,
              help="Use the fixed tolerance table only (default: also allow 4x each case's measured float32 floor).")
def verify(src: Path, ggufs, onnx_dirs, extra_targets, no_transformers: bool, lengths, allow_beyond_max: bool,
           device: str, dtype: str, tolerances, reference_spec, reference_dtype, start_tokens, seed: int,
           json_out, junit_out, plot_out, write_card: bool, device_map, force: bool, no_precision_floor: bool) -> None:
    """Check transformers, GGUF files and ONNX folders against an independent float64 reference on SRC.

    SRC is a baked LongRoPE checkpoint folder. The table goes to stdout, progress and logs to stderr.
    """
    from ..verify.report_files import check_report_path, report_json, report_junit, write_text
    from ..verify.report_table import format_table
    from ..verify.runner import VerifyOptions, run_verification
    from ..verify.targets import TargetRequest, parse_target
    from ..verify.tolerances import parse_override

    requests = [] if no_transformers else [TargetRequest("transformers")]
    requests += [TargetRequest("gguf", p) for p in ggufs] + [TargetRequest("onnx", p) for p in onnx_dirs]
    requests += [parse_target(t) for t in extra_targets]
    if not requests:
        raise click.UsageError("nothing to verify: --no-transformers without --gguf/--onnx/--target")
    overrides = tuple(parse_override(t) for t in tolerances)
    inputs = [src] + [r.path for r in requests if r.path is not None]
    for out in (json_out, junit_out, plot_out):
        if out is not None:
            check_report_path(out, inputs, force)
    options = VerifyOptions(src=src, targets=tuple(requests), lengths=lengths, device=device, dtype=dtype,
                            tolerances=overrides, reference_spec=reference_spec, reference_dtype=reference_dtype,
                            seed=seed, allow_beyond_max=allow_beyond_max, start_tokens=start_tokens,
                            precision_floor=not no_precision_floor, device_map=device_map)
    report = run_verification(options)
    click.echo(format_table(report))
    if json_out:
        write_text(json_out, report_json(report))
    if junit_out:
        write_text(junit_out, report_junit(report))
    if plot_out:
        from ..verify.report_plot import plot_report

        plot_report(report, plot_out)
    if write_card:
        from ..verify.report_card import write_card as write_model_card

        card, data = write_model_card(report, src)
        click.echo(f"parity table written to {card} and {data}", err=True)
    if not report.passed:
        raise click.exceptions.Exit(EXIT_MISMATCH)
