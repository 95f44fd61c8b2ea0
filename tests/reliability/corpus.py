"""The bad-input corpus: each case breaks one input of a good set-up; each command adapter says how to call it.

A case returns the path the error message must name and a fragment of the expected problem. Every case runs
against every command that takes that kind of input (tests/reliability/test_bad_inputs.py).
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from longrope_convert.convert.demo.tiny_checkpoint import write_tiny_checkpoint

GOOD_LONG = "".join(f"{1 + i * 0.4:.18e}\n" for i in range(8))  # 8 = rotary dim 16 / 2


@dataclass
class Setup:
    """A good checkpoint + factor file; cases mutate copies of it."""

    root: Path
    src: Path
    long_factors: Path
    out: Path
    extra_args: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, root: Path, baked: Path | None = None) -> "Setup":
        src = root / "src"
        if baked is not None:
            shutil.copytree(baked, src)
        else:
            write_tiny_checkpoint(src, "LlamaForCausalLM", seed=5)
        long_factors = root / "long.csv"
        long_factors.write_text(GOOD_LONG)
        return cls(root, src, long_factors, root / "out")


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "factors", "config", "weights" or "output": which commands it applies to
    apply: Callable[[Setup], tuple[Path, str]]  # mutates the setup, returns (path named, message fragment)


def _factor_text(text: str, expect: str) -> Callable[[Setup], tuple[Path, str]]:
    def apply(s: Setup) -> tuple[Path, str]:
        s.long_factors.write_text(text)
        return s.long_factors, expect
    return apply


def _config(mutate: Callable[[dict], object], expect: str) -> Callable[[Setup], tuple[Path, str]]:
    def apply(s: Setup) -> tuple[Path, str]:
        path = s.src / "config.json"
        config = json.loads(path.read_text())
        result = mutate(config)
        path.write_text(result if isinstance(result, str) else json.dumps(config))
        return path, expect
    return apply


def _missing_config(s: Setup) -> tuple[Path, str]:
    (s.src / "config.json").unlink()
    return s.src / "config.json", "not found"


def _huge_config(s: Setup) -> tuple[Path, str]:
    path = s.src / "config.json"
    with path.open("a") as fh:
        fh.truncate(100 * 1024 * 1024)  # sparse: 100 MB on paper, instant to make
    return path, "byte limit"


def _truncate_weights(s: Setup) -> tuple[Path, str]:
    path = s.src / "model.safetensors"
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size - 1000)
    return path, "truncated or lying header"


def _lying_header(s: Setup) -> tuple[Path, str]:
    path = s.src / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 2)
    path.write_bytes(bytes(data))
    return path, "exceeds the file size"


def _index_names_absent_shard(s: Setup) -> tuple[Path, str]:
    weights = s.src / "model.safetensors"
    weights.rename(s.src / "model-00001-of-00002.safetensors")
    index = s.src / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                                "b": "model-00002-of-00002.safetensors"}}))
    return index, "missing shard"


def _pickle_only(s: Setup) -> tuple[Path, str]:
    (s.src / "model.safetensors").rename(s.src / "pytorch_model.bin")
    return s.src, "pickle"


def _out_is_src(s: Setup) -> tuple[Path, str]:
    s.out = s.src
    return s.src, "same path as the input"


def _out_inside_src(s: Setup) -> tuple[Path, str]:
    s.out = s.src / "nested"
    return s.out, "inside the input"


def _out_exists(s: Setup) -> tuple[Path, str]:
    s.out.mkdir()
    (s.out / "precious.txt").write_text("keep me")
    return s.out, "--force"


def _out_unwritable(s: Setup) -> tuple[Path, str]:
    s.out = Path("/proc/longrope-convert-test-out")
    return s.out, "cannot write"


def _out_parent_missing(s: Setup) -> tuple[Path, str]:
    s.out = s.root / "no" / "such" / "dir" / "out"
    return s.out, "does not exist"


CASES = [
    Case("empty factor file", "factors", _factor_text("", "empty")),
    Case("non-numeric factor", "factors", _factor_text("1.0\nfoo\n" + "1.0\n" * 6, "'foo' is not a number")),
    Case("nan factor", "factors", _factor_text("nan\n" + "1.0\n" * 7, "finite")),
    Case("inf factor", "factors", _factor_text("inf\n" + "1.0\n" * 7, "finite")),
    Case("negative factor", "factors", _factor_text("-1.0\n" + "1.0\n" * 7, "> 0")),
    Case("wrong length", "factors", _factor_text("1.0\n" * 5, "has 5 values, expected 8")),
    Case("ragged matrix", "factors", _factor_text("1,2,3\n1,2\n", "ragged")),
    Case("per-layer rows differ", "factors", _factor_text("1,1,1,1,1,1,1,1\n1,1,1,1,1,1,1,2\n", "differs")),
    Case("search prefix without option", "factors", _factor_text("4\n" + "1.0\n" * 8, "--strip-search-prefix")),
    Case("million-line factor file", "factors", _factor_text("1.0\n" * 1_000_000, "byte limit")),
    Case("missing config.json", "config", _missing_config),
    Case("malformed config.json", "config", _config(lambda c: "{not json", "not valid JSON")),
    Case("100 MB config.json", "config", _huge_config),
    Case("unsupported architecture", "config",
         _config(lambda c: c.update(architectures=["GPT2LMHeadModel"]), "not supported")),
    Case("non-numeric geometry", "config",
         _config(lambda c: c.update(hidden_size="big"), "'hidden_size' must be a positive integer")),
    Case("truncated safetensors", "weights", _truncate_weights),
    Case("lying safetensors header", "weights", _lying_header),
    Case("index names absent shard", "weights", _index_names_absent_shard),
    Case("pickle-only weights", "weights", _pickle_only),
    Case("output equals input", "output", _out_is_src),
    Case("output inside input", "output", _out_inside_src),
    Case("existing output without --force", "output", _out_exists),
    Case("unwritable output folder", "output", _out_unwritable),
    Case("output parent missing", "output", _out_parent_missing),
]


@dataclass(frozen=True)
class Command:
    """How to call one CLI verb on a Setup; `kinds` lists the inputs it reads."""

    name: str
    kinds: tuple[str, ...]
    needs_baked: bool
    argv: Callable[[Setup], list[str]]


def _bake_argv(s: Setup) -> list[str]:
    return ["bake", str(s.src), "-o", str(s.out), "--long-factors", str(s.long_factors),
            "--max-position-embeddings", "1024"]


def _inspect_argv(s: Setup) -> list[str]:
    return ["inspect", str(s.src)]


def _hf_to_gguf_argv(s: Setup) -> list[str]:
    return ["hf-to-gguf", str(s.src), "-o", str(s.out), "--long-factors", str(s.long_factors),
            "--max-position-embeddings", "1024", "--no-vocab"]


def _export_onnx_argv(s: Setup) -> list[str]:
    return ["export-onnx", str(s.src), "-o", str(s.out)]


def _verify_argv(s: Setup) -> list[str]:
    return ["verify", str(s.src), "--lengths", "64", "--json", str(s.out)]


COMMANDS = [
    Command("bake", ("factors", "config", "weights", "output"), False, _bake_argv),
    Command("inspect", ("config",), True, _inspect_argv),
    Command("hf-to-gguf", ("factors", "config", "weights", "output"), False, _hf_to_gguf_argv),
    Command("export-onnx", ("config", "weights", "output"), True, _export_onnx_argv),
    Command("verify", ("config", "weights"), True, _verify_argv),  # report paths: tests/verify/test_verify_cli.py
]
