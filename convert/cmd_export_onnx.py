"""`longrope-convert export-onnx`: one ONNX graph that switches LongRoPE factor sets inside the graph."""

from __future__ import annotations

from pathlib import Path

import click

from ..formats.onnx.attention_forms import ATTENTION_FORMS, DEFAULT_ATTENTION

DTYPES = ("fp32", "fp16", "int4")  # formats.onnx.decoder.EXPORT_DTYPES; literal so the CLI starts without onnx


@click.command(name="export-onnx")
@click.argument("src", type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--dtype", type=click.Choice(DTYPES), default="fp32", show_default=True,
              help="Weight dtype; int4 = fp32 graph with MatMul weights in onnxruntime MatMulNBits (block 32).")
@click.option("--attention", type=click.Choice(ATTENTION_FORMS), default=DEFAULT_ATTENTION, show_default=True,
              help="gqa: onnxruntime's fused GroupQueryAttention (memory linear in length, unpadded or "
                   "right-padded batches); standard: plain ONNX ops (any runtime, padding; [heads, T, T] scores).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 or newer).")
@click.option("--no-past", is_flag=True, help="No KV cache: inputs input_ids/attention_mask/position_ids only.")
@click.option("--start-tokens", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="LongRoPE v1 n_hat: positions < N keep plain RoPE (no attention factor) in the graph.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def export_onnx(src: Path, out: Path, dtype: str, attention: str, opset: int, no_past: bool, start_tokens: int,
                force: bool) -> None:
    """Export the LongRoPE checkpoint SRC as OUT/model.onnx (Optimum / onnxruntime-genai decoder layout).

    Both factor sets are in the graph; it uses the long set iff past + current length > L_orig, as transformers.
    --no-past folders carry no genai_config.json (onnxruntime-genai needs a KV cache).
    With --start-tokens N, positions below N use plain RoPE (LongRoPE v1); N is recorded in the metadata.
    """
    from .export_onnx import export_onnx as run_export

    run_export(src, out, dtype=dtype, opset=opset, with_past=not no_past, force=force, start_tokens=start_tokens,
               attention=attention)
