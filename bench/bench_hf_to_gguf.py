"""Benchmark: our hf-to-gguf (to f16) vs llama.cpp's convert_hf_to_gguf.py vs a plain `cat` of the shards.

Builds (once, cached) a >= 2 GB synthetic bf16 LLaMA checkpoint in TinyLlama-1.1B's shape, baked with example
LongRoPE factors and a SentencePiece tokenizer, then runs the three commands alternately for --rounds rounds (in
reverse order every other round), each as a subprocess, printing wall time, peak RSS (ru_maxrss via a small
launcher) and CPU time, and one table with each command's time relative to llama.cpp's converter and to `cat`.

    /tmp/venv/bin/python bench/bench_hf_to_gguf.py [--workdir /tmp/longrope-bench] [--rounds 3]

llama.cpp's converter comes from the llama-cpp-python sdist: LONGROPE_LLAMA_CPP_SRC, else the unpacked sdist in
/tmp/sdist, else `pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36` into the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SDIST_VERSION = "0.3.36"
SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_layers=22, num_heads=32, num_kv_heads=4, head_dim=64,
             vocab_size=32000, original_max_position_embeddings=2048)
MAX_POSITIONS = 8192
SHARD_BYTES = 1 << 30
POOL_VALUES = 64 << 20  # random bf16 values sliced into every tensor (fast to build, realistic magnitudes)


def tensor_shapes(s: dict) -> dict[str, tuple[int, ...]]:
    """HF LLaMA tensor names and shapes, from the architecture description (required tensors only)."""
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, tiny_config
    from longrope_convert.formats.architectures import ARCHITECTURES
    from longrope_convert.formats.hf.geometry import geometry

    arch = ARCHITECTURES["LlamaForCausalLM"]
    geo = geometry(tiny_config(arch, TinyShape(**s)))
    return {slot.name: slot.shape for slot in arch.tensor_slots(geo) if slot.required}


def build_checkpoint(folder: Path) -> Path:
    """Sharded bf16 safetensors + LongRoPE config + tokenizer; skipped when already built."""
    if (folder / "DONE").exists():
        return folder
    import torch
    from longrope_convert.convert.demo.example_factors import example_long_factors, example_short_factors
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, tiny_config
    from longrope_convert.convert.demo.tiny_tokenizer import write_sentencepiece_tokenizer
    from longrope_convert.formats.architectures import ARCHITECTURES
    from longrope_convert.formats.hf.config import longrope_config
    from longrope_convert.formats.spec import LongRopeSpec
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    pool = (torch.randn(POOL_VALUES, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    shards, current, size, offset = [], {}, 0, 0
    for name, shape in tensor_shapes(SHAPE).items():
        n = 1
        for d in shape:
            n *= d
        start = offset % (POOL_VALUES - n) if n < POOL_VALUES else 0
        values = pool[start:start + n] if n <= POOL_VALUES else pool.repeat(n // POOL_VALUES + 1)[:n]
        offset += 7919
        current[name] = values.reshape(shape).clone()  # safetensors refuses tensors sharing memory
        size += 2 * n
        if size >= SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    weight_map = {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map |= {name: fname for name in shard}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shape = TinyShape(**{k: v for k, v in SHAPE.items()})
    config = tiny_config(ARCHITECTURES["LlamaForCausalLM"], shape) | {"torch_dtype": "bfloat16"}
    d_rot = SHAPE["head_dim"]
    spec = LongRopeSpec(example_long_factors(d_rot, MAX_POSITIONS / shape.original_max_position_embeddings),
                        example_short_factors(d_rot), shape.original_max_position_embeddings, MAX_POSITIONS,
                        10000.0, d_rot)
    (folder / "config.json").write_text(json.dumps(longrope_config(config, spec), indent=2))
    write_sentencepiece_tokenizer(folder)
    (folder / "DONE").write_text("ok\n")
    return folder


def llama_cpp_converter(workdir: Path) -> Path:
    """convert_hf_to_gguf.py from the llama-cpp-python sdist, fetched into `workdir` when not found."""
    candidates = [Path(os.environ["LONGROPE_LLAMA_CPP_SRC"])] if "LONGROPE_LLAMA_CPP_SRC" in os.environ else []
    candidates += [Path(f"/tmp/sdist/llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp"),
                   workdir / f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp"]
    for c in candidates:
        if (c / "convert_hf_to_gguf.py").is_file():
            return c / "convert_hf_to_gguf.py"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={SDIST_VERSION}", "-d", str(workdir)], check=True)
    with tarfile.open(workdir / f"llama_cpp_python-{SDIST_VERSION}.tar.gz") as tar:
        tar.extractall(workdir, filter="data")
    return candidates[-1] / "convert_hf_to_gguf.py"


# A small launcher runs each command: ru_maxrss counts a forked child's pre-exec copy of its parent, so forking the
# command straight from this (possibly large, torch-importing) process would inflate its peak RSS.
LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:], stdout=subprocess.DEVNULL); "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "open(sys.argv[1], 'w').write(f'{u.ru_maxrss} {u.ru_utime + u.ru_stime}'); sys.exit(rc)")


# Python caches compiled modules (__pycache__) as after any install; a PYTHONDONTWRITEBYTECODE=1 environment would
# make both converters compile every module from source on every run (~0.07 s of ours), which no user pays.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(argv: list[str], out: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds user+sys) of one command; the output is removed afterwards."""
    os.sync()
    usage_file = out.with_suffix(".usage")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(usage_file), *argv], stderr=subprocess.PIPE, env=ENV)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    maxrss_kb, cpu = usage_file.read_text().split()
    out.unlink(missing_ok=True)
    return wall, int(maxrss_kb) / 1024, float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/longrope-bench"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    src = build_checkpoint(args.workdir / "llama-bf16")
    shards = sorted(src.glob("*.safetensors"))
    total = sum(p.stat().st_size for p in shards)
    out = args.workdir / "out.gguf"
    commands = {
        "ours": [sys.executable, "-m", "longrope_convert.convert", "hf-to-gguf", str(src), "-o", str(out),
                 "--outtype", "f16", "--force"],
        "llama.cpp": [sys.executable, str(llama_cpp_converter(args.workdir)), str(src), "--outfile", str(out),
                      "--outtype", "f16"],
        "cat": ["sh", "-c", f"cat {' '.join(str(p) for p in shards)} > {out}"],
    }
    print(f"checkpoint: {total / 1e9:.2f} GB bf16 in {len(shards)} shards ({src})")
    subprocess.run(["sh", "-c", f"cat {' '.join(str(p) for p in shards)} > /dev/null"], check=True)  # warm cache
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in commands}
    for r in range(args.rounds):
        # every other round in reverse: on the shared VM a pwrite-based writer right after `cat` (copy_file_range)
        # wrote 2.1 GB in 1.0-3.1 s, right after another pwrite-based one in 0.5-0.6 s; in a fixed order ours always
        # followed `cat` (ours: 1.67-3.46 s after it, 1.67-1.78 s after itself)
        for name, argv in (commands.items() if r % 2 == 0 else reversed(commands.items())):
            wall, rss, cpu = measure(argv, out)
            results[name].append((wall, rss, cpu))
            print(f"round {r + 1} {name:<10} {wall:7.2f} s {rss:8.0f} MB {cpu:7.2f} s CPU", flush=True)
    med = {k: (statistics.median(w for w, _, _ in v), max(m for _, m, _ in v), statistics.median(c for *_, c in v))
           for k, v in results.items()}
    print(f"\n{'':<10} {'wall (median)':>14} {'peak RSS (max)':>15} {'CPU (median)':>13} "
          f"{'time / llama.cpp':>17} {'time / cat':>11}")
    for name, (wall, rss, cpu) in med.items():
        print(f"{name:<10} {wall:12.2f} s {rss:12.0f} MB {cpu:11.2f} s "
              f"{wall / med['llama.cpp'][0]:16.2f}x {wall / med['cat'][0]:10.2f}x")
    print(f"\nours / llama.cpp: time {med['ours'][0] / med['llama.cpp'][0]:.2f}x, "
          f"peak RSS {med['ours'][1] / med['llama.cpp'][1]:.2f}x, CPU {med['ours'][2] / med['llama.cpp'][2]:.2f}x "
          "(target <= 0.5x time and RSS)")
    print(f"ours / cat: time {med['ours'][0] / med['cat'][0]:.2f}x (target <= 1.5x)")
    print("single rounds (s): " + "; ".join(f"{k} " + " / ".join(f"{w:.2f}" for w, _, _ in v)
                                             for k, v in results.items()))


if __name__ == "__main__":
    main()
