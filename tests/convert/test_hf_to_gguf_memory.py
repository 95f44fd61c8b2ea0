"""Streaming: peak RSS of hf-to-gguf does not grow with the model (slow: builds two bf16 checkpoints, 0.2/0.5 GB)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint

SHAPE = dict(hidden_size=1024, intermediate_size=2816, num_heads=16, num_kv_heads=4, head_dim=64, vocab_size=32000)
# ru_maxrss counts a forked child's pre-exec copy of its parent: a small launcher keeps pytest's pages out of it
LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


def peak_rss_mb(argv: list[str], usage_file) -> float:
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(usage_file), *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(usage_file.read_text()) / 1024


@pytest.mark.slow
def test_peak_rss_is_independent_of_model_size(tmp_path):
    import torch

    factors = tmp_path / "long.csv"
    factors.write_text("".join(f"{1 + i * 0.05:.18e}\n" for i in range(32)))  # d_rot 64 -> 32 factors
    rss, sizes = {}, {}
    for layers in (4, 16):
        src = write_tiny_checkpoint(tmp_path / f"m{layers}", "LlamaForCausalLM",
                                    TinyShape(num_layers=layers, **SHAPE), seed=0, dtype=torch.bfloat16)
        sizes[layers] = (src / "model.safetensors").stat().st_size / 2**20
        rss[layers] = peak_rss_mb([
            sys.executable, "-m", "longrope_convert.convert", "hf-to-gguf", str(src), "-o", str(tmp_path / "o.gguf"),
            "--outtype", "f16", "--long-factors", str(factors), "--max-position-embeddings", "1024",
            "--no-vocab", "--force"], tmp_path / "usage")
    assert sizes[16] > 2 * sizes[4]
    assert max(rss.values()) < 120, (sizes, rss)  # measured ~45 MB
    assert abs(rss[16] - rss[4]) < 15, (sizes, rss)
