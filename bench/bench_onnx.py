"""Benchmark export-onnx: export time, onnxruntime (CPU) prefill/decode throughput vs eager PyTorch (transformers).

Builds synthetic seeded checkpoints (nothing downloaded): the tiny demo shape and a ~1 GB one (fp16 on disk,
hidden 2048, 8 layers, vocab 32000), bakes example LongRoPE factors (L_orig 256 -> 1024), exports fp32 and runs
both runtimes on the same tokens. One run each after a warm-up; ratios are ORT / eager.

    python bench/bench_onnx.py [--sizes tiny,1gb] [--prefill 512] [--decode 32] [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from longrope_convert.convert.bake import bake_checkpoint
from longrope_convert.convert.demo.example_factors import example_long_factors, example_short_factors
from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint
from longrope_convert.convert.export_onnx import export_onnx
from longrope_convert.formats.spec_inputs import SpecRequest
from longrope_convert.verify.onnx_runner import OnnxDecoderSession

L_ORIG, MAX_POS = 256, 1024
SHAPES = {
    "tiny": (TinyShape(), torch.float32),
    "1gb": (TinyShape(hidden_size=2048, intermediate_size=5632, num_layers=8, num_heads=16, num_kv_heads=4,
                      head_dim=128, vocab_size=32000), torch.float16),
}


def build_checkpoint(workdir: Path, size: str) -> Path:
    shape, dtype = SHAPES[size]
    plain = write_tiny_checkpoint(workdir / size / "plain", "LlamaForCausalLM", shape, seed=0, dtype=dtype)
    long_path, short_path = workdir / size / "long.txt", workdir / size / "short.txt"
    long_path.write_text("".join(f"{v!r}\n" for v in example_long_factors(shape.head_dim, MAX_POS / L_ORIG)))
    short_path.write_text("".join(f"{v!r}\n" for v in example_short_factors(shape.head_dim)))
    request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=MAX_POS)
    return bake_checkpoint(plain, workdir / size / "baked", request).output


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run_onnx(folder: Path, ids: np.ndarray, prefill: int, decode: int) -> tuple[float, float]:
    sess = OnnxDecoderSession(folder)
    sess.forward(ids[:, :8])  # warm-up
    (_, past), t_prefill = timed(lambda: sess.forward(ids[:, :prefill]))
    start = time.perf_counter()
    for i in range(decode):
        _, past = sess.forward(ids[:, prefill + i:prefill + i + 1], past)
    return t_prefill, time.perf_counter() - start


@torch.inference_mode()
def run_eager(folder: Path, ids: torch.Tensor, prefill: int, decode: int) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()  # default (sdpa) attention
    model(input_ids=ids[:, :8])
    out, t_prefill = timed(lambda: model(input_ids=ids[:, :prefill], use_cache=True))
    past = out.past_key_values
    start = time.perf_counter()
    for i in range(decode):
        step = ids[:, prefill + i:prefill + i + 1]
        past = model(input_ids=step, past_key_values=past, use_cache=True).past_key_values
    return t_prefill, time.perf_counter() - start


def bench(size: str, workdir: Path, prefill: int, decode: int) -> dict:
    baked = build_checkpoint(workdir, size)
    weights_gb = sum(f.stat().st_size for f in baked.glob("*.safetensors")) / 1e9
    export, t_export = timed(lambda: export_onnx(baked, workdir / size / "onnx"))
    _, t_export16 = timed(lambda: export_onnx(baked, workdir / size / "onnx16", dtype="fp16"))
    onnx_gb = sum(f.stat().st_size for f in export.output.iterdir()) / 1e9
    vocab = SHAPES[size][0].vocab_size
    ids = torch.randint(0, vocab, (1, prefill + decode), generator=torch.Generator().manual_seed(0))
    ort_p, ort_d = run_onnx(export.output, ids.numpy(), prefill, decode)
    eager_p, eager_d = run_eager(baked, ids, prefill, decode)
    row = {
        "size": size, "checkpoint_gb": round(weights_gb, 3), "onnx_fp32_gb": round(onnx_gb, 3),
        "external_data": export.external_data,
        "export_fp32_s": round(t_export, 2), "export_fp16_s": round(t_export16, 2),
        "prefill_tokens": prefill, "decode_steps": decode,
        "ort_prefill_tok_s": round(prefill / ort_p, 1), "eager_prefill_tok_s": round(prefill / eager_p, 1),
        "ort_decode_tok_s": round(decode / ort_d, 1), "eager_decode_tok_s": round(decode / eager_d, 1),
    }
    row["prefill_ratio_ort_over_eager"] = round(row["ort_prefill_tok_s"] / row["eager_prefill_tok_s"], 2)
    row["decode_ratio_ort_over_eager"] = round(row["ort_decode_tok_s"] / row["eager_decode_tok_s"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,1gb")
    parser.add_argument("--prefill", type=int, default=512, help="prompt tokens (> L_orig 256: long factors)")
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_onnx_"))
    rows = []
    try:
        for size in args.sizes.split(","):
            rows.append(bench(size, workdir, args.prefill, args.decode))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"torch threads {torch.get_num_threads()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
