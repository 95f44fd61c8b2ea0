"""Long-context ONNX benchmark: prefill peak RSS per attention form, 16k parity, and speed vs transformers eager.

Model: seeded random LLaMA, hidden 512, 16 heads / 4 KV heads of 32, 2 layers, intermediate 1408, vocab 512;
example LongRoPE factors baked for L_orig 4096 -> 131072 (nothing downloaded). Each prefill runs in a fresh
subprocess (peak RSS = its resource.getrusage ru_maxrss, which includes Python + onnxruntime, ~100 MB). The standard
graph is skipped where verify's memory guard says its [heads, T, T] scores do not fit in this host's memory.

    python bench/bench_onnx_long.py [--lengths 4096,8192,16384] [--parity 16384] [--decode 64] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

L_ORIG, MAX_POS = 4096, 131072
SHAPE = dict(hidden_size=512, intermediate_size=1408, num_layers=2, num_heads=16, num_kv_heads=4, head_dim=32,
             vocab_size=512, original_max_position_embeddings=L_ORIG)
FORMS = ("gqa", "standard")
SPEED_PREFILL = 4096
KIB = 1024


def build(workdir: Path) -> dict[str, Path]:
    """The baked checkpoint and one export per attention form."""
    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.example_factors import example_long_factors, example_short_factors
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint
    from longrope_convert.convert.export_onnx import export_onnx
    from longrope_convert.formats.spec_inputs import SpecRequest

    shape = TinyShape(**SHAPE)
    plain = write_tiny_checkpoint(workdir / "plain", "LlamaForCausalLM", shape, seed=0)
    long_path, short_path = workdir / "long.txt", workdir / "short.txt"
    long_path.write_text("".join(f"{v!r}\n" for v in example_long_factors(shape.head_dim, MAX_POS / L_ORIG)))
    short_path.write_text("".join(f"{v!r}\n" for v in example_short_factors(shape.head_dim)))
    request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=MAX_POS)
    paths = {"baked": bake_checkpoint(plain, workdir / "baked", request).output}
    for form in FORMS:
        paths[form] = export_onnx(paths["baked"], workdir / form, attention=form).output
    return paths


def child_prefill(folder: str, length: int) -> None:
    """In a fresh process: one prefill of `length` tokens; print seconds and peak RSS as JSON."""
    from longrope_convert.verify.onnx_runner import OnnxDecoderSession

    sess = OnnxDecoderSession(Path(folder))
    ids = np.random.default_rng(0).integers(0, SHAPE["vocab_size"], (1, length))
    start = time.perf_counter()
    sess.forward(ids)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak}))


def prefill_in_subprocess(folder: Path, length: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", str(folder), str(length)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def standard_fits(baked: Path, length: int) -> bool:
    """verify's memory guard for the standard graph, against this host's available memory."""
    from longrope_convert.formats.hf.checkpoint import open_checkpoint
    from longrope_convert.verify.memory import available_host_bytes
    from longrope_convert.verify.target_onnx import onnx_forward_bytes

    return onnx_forward_bytes(length, open_checkpoint(baked).geometry, "standard") < available_host_bytes()


def memory_rows(paths: dict[str, Path], lengths: list[int]) -> list[dict]:
    rows = []
    for length in lengths:
        for form in FORMS:
            if form == "standard" and not standard_fits(paths["baked"], length):
                rows.append({"form": form, "tokens": length, "skipped": "scores do not fit in host memory"})
            else:
                result = prefill_in_subprocess(paths[form], length)
                rows.append({"form": form, "tokens": length, **result})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def parity(paths: dict[str, Path], length: int) -> dict:
    """verify's own run: the gqa graph at `length` tokens against the float64 reference."""
    from longrope_convert.verify.runner import VerifyOptions, run_verification
    from longrope_convert.verify.targets import TargetRequest

    report = run_verification(VerifyOptions(src=paths["baked"], targets=(TargetRequest("onnx", paths["gqa"]),),
                                            lengths=str(length), device="cpu", progress=False))
    rows = [{"target": r.target, "label": r.label, "status": r.status,
             "relative_l2": r.metrics.get("relative_l2") if r.metrics else None,
             "top1": r.metrics.get("top1_agreement") if r.metrics else None} for r in report.results]
    return {"passed": report.passed, "rows": rows}


def speed(paths: dict[str, Path], decode: int) -> dict:
    """Prefill SPEED_PREFILL tokens then `decode` cached steps: ORT (gqa graph) vs transformers eager fp32."""
    import torch
    from longrope_convert.verify.onnx_runner import OnnxDecoderSession
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, SHAPE["vocab_size"], (1, SPEED_PREFILL + decode), generator=torch.Generator().manual_seed(0))
    sess = OnnxDecoderSession(paths["gqa"])
    sess.forward(ids[:, :8].numpy())  # warm-up
    start = time.perf_counter()
    _, past = sess.forward(ids[:, :SPEED_PREFILL].numpy())
    ort_prefill = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(decode):
        _, past = sess.forward(ids[:, SPEED_PREFILL + i:SPEED_PREFILL + i + 1].numpy(), past)
    ort_decode = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(str(paths["baked"]), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    with torch.inference_mode():
        model(input_ids=ids[:, :8])
        start = time.perf_counter()
        out = model(input_ids=ids[:, :SPEED_PREFILL], use_cache=True)
        eager_prefill = time.perf_counter() - start
        cache = out.past_key_values
        start = time.perf_counter()
        for i in range(decode):
            cache = model(input_ids=ids[:, SPEED_PREFILL + i:SPEED_PREFILL + i + 1], past_key_values=cache,
                          use_cache=True).past_key_values
        eager_decode = time.perf_counter() - start
    return {"prefill_tokens": SPEED_PREFILL, "decode_steps": decode,
            "ort_prefill_tok_s": round(SPEED_PREFILL / ort_prefill, 1),
            "eager_prefill_tok_s": round(SPEED_PREFILL / eager_prefill, 1),
            "ort_decode_tok_s": round(decode / ort_decode, 1), "eager_decode_tok_s": round(decode / eager_decode, 1),
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_prefill(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4096,8192,16384")
    parser.add_argument("--parity", type=int, default=16384, help="verify at this length (0: skip)")
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_onnx_long_"))
    try:
        paths = build(workdir)
        results = {"memory": memory_rows(paths, [int(x) for x in args.lengths.split(",")])}
        results["speed"] = speed(paths, args.decode)
        print(json.dumps(results["speed"]), flush=True)
        if args.parity:
            results["parity"] = parity(paths, args.parity)
            print(json.dumps(results["parity"]), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
