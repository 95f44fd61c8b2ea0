#!/usr/bin/env python
"""The float64 reference against the float32 transformers target, side by side in one run (issue: verify at scale).

Builds a 16-head / 4-KV-head model (hidden 512, head_dim 32, 2 layers, vocab 32000, L_orig 4096 -> 131072), bakes
example factors, and runs `verify` with the transformers target at the given lengths. Prints, per length, the
reference's seconds, the target's seconds, their ratio, both rel_l2s and the process's peak RSS.

    .venv/bin/python bench/bench_reference.py --lengths 4096,16384
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

SHAPE = dict(hidden_size=512, intermediate_size=1024, num_layers=2, num_heads=16, num_kv_heads=4, head_dim=32,
             vocab_size=32000, original_max_position_embeddings=4096)
MAX_POSITIONS = 131072


def build(root: Path) -> Path:
    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.models import write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint
    from longrope_convert.formats.spec_inputs import SpecRequest

    plain = write_tiny_checkpoint(root / "plain", "LlamaForCausalLM", TinyShape(**SHAPE), seed=0)
    scale = MAX_POSITIONS / SHAPE["original_max_position_embeddings"]
    long_path, short_path = write_example_factor_files(root, SHAPE["head_dim"], scale)
    request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=MAX_POSITIONS)
    return bake_checkpoint(plain, root / "baked", request).output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4096,16384")
    args = parser.parse_args()
    from longrope_convert.verify.runner import VerifyOptions, run_verification

    with tempfile.TemporaryDirectory() as tmp:
        baked = build(Path(tmp))
        report = run_verification(VerifyOptions(src=baked, lengths=args.lengths, device="cpu", progress=False))
    print(f"{'tokens':>7} {'reference s':>12} {'transformers f32 s':>19} {'ratio':>6} {'rel_l2':>9} {'status':>6}")
    for case, row in zip(report.cases, report.results):
        ratio = case.reference_seconds / max(row.seconds, 1e-9)
        print(f"{case.length:>7} {case.reference_seconds:>12.2f} {row.seconds:>19.2f} {ratio:>6.2f} "
              f"{row.metrics.get('relative_l2', float('nan')):>9.2e} {row.status:>6}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
