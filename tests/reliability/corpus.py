"""The bad-input corpus: each case breaks one input of a good set-up; each command adapter says how to call it.

A case returns the path the error message must name and a fragment of the expected problem. Every case runs
against every command that takes that kind of input (tests/reliability/test_bad_inputs.py).
"""

from __future__ import annotations

import json
import os
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
    gguf: Path | None = None  # a good GGUF of the baked checkpoint, for the "gguf" cases

    @classmethod
    def make(cls, root: Path, baked: Path | None = None, gguf: Path | None = None) -> "Setup":
        src = root / "src"
        if baked is not None:
            shutil.copytree(baked, src)
        else:
            write_tiny_checkpoint(src, "LlamaForCausalLM", seed=5)
        long_factors = root / "long.csv"
        long_factors.write_text(GOOD_LONG)
        setup = cls(root, src, long_factors, root / "out")
        if gguf is not None:
            setup.gguf = root / "model.gguf"
            shutil.copyfile(gguf, setup.gguf)
        return setup


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


def _write(name: str, content: str | bytes, expect: str) -> Callable[[Setup], tuple[Path, str]]:
    """Replace (or add) one file of the checkpoint."""
    def apply(s: Setup) -> tuple[Path, str]:
        path = s.src / name
        if path.exists() or path.is_symlink():
            path.unlink()
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path, expect
    return apply


def _bpe_tokenizer(content: str, expect: str) -> Callable[[Setup], tuple[Path, str]]:
    """tokenizer.json as the only tokenizer (a tokenizer.model would be read first)."""
    write = _write("tokenizer.json", content, expect)

    def apply(s: Setup) -> tuple[Path, str]:
        (s.src / "tokenizer.model").unlink(missing_ok=True)
        return write(s)
    return apply


def _sparse(name: str, size: int, expect: str) -> Callable[[Setup], tuple[Path, str]]:
    def apply(s: Setup) -> tuple[Path, str]:
        path = s.src / name
        path.unlink(missing_ok=True)
        with path.open("wb") as fh:
            fh.truncate(size)  # sparse: instant to make, huge on paper
        return path, expect
    return apply


def _fifo(name: str) -> Callable[[Setup], tuple[Path, str]]:
    """A FIFO in place of a file: opening it would block forever, so it must be refused before any open."""
    def apply(s: Setup) -> tuple[Path, str]:
        path = s.src / name
        path.unlink(missing_ok=True)
        os.mkfifo(path)
        return path, "not a regular file"
    return apply


def _outside_link(name: str) -> Callable[[Setup], tuple[Path, str]]:
    """A symlink to a copy of the file outside SRC: readable, well-formed, and still refused."""
    def apply(s: Setup) -> tuple[Path, str]:
        path = s.src / name
        outside = s.root / f"outside-{name}"
        shutil.copyfile(path, outside)
        path.unlink()
        path.symlink_to(outside)
        return path, "outside the checkpoint folder"
    return apply


def _header(mutate: Callable[[dict], None], expect: str) -> Callable[[Setup], tuple[Path, str]]:
    """Rewrite model.safetensors' header (same data section) after `mutate` edits it as a dict."""
    def apply(s: Setup) -> tuple[Path, str]:
        path = s.src / "model.safetensors"
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        mutate(header)
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
        return path, expect
    return apply


def _tensors(header: dict) -> list[dict]:
    return [v for k, v in sorted(header.items(), key=lambda kv: kv[1].get("data_offsets", [0])[0])
            if k != "__metadata__"]


def _overlap(header: dict) -> None:
    first, second = _tensors(header)[:2]
    width = second["data_offsets"][1] - second["data_offsets"][0]
    second["data_offsets"] = [first["data_offsets"][1] - 4, first["data_offsets"][1] - 4 + width]


def _gap(header: dict) -> None:
    second = _tensors(header)[1]
    del header[next(k for k, v in header.items() if v is second)]


def _duplicate_tensor(s: Setup) -> tuple[Path, str]:
    """Two entries under one name: json keeps the last silently, safetensors refuses the file."""
    path, _ = _header(lambda h: None, "")(s)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    raw = data[8:8 + n].rstrip()
    name, meta = next((k, v) for k, v in json.loads(raw).items() if k != "__metadata__")
    raw = raw[:-1] + b", " + json.dumps({name: meta}).encode()[1:]
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return path, "given twice"


def _index(weight_map: object, expect: str) -> Callable[[Setup], tuple[Path, str]]:
    def apply(s: Setup) -> tuple[Path, str]:
        index = s.src / "model.safetensors.index.json"
        index.write_text(weight_map if isinstance(weight_map, str) else json.dumps({"weight_map": weight_map}))
        return index, expect
    return apply


def _index_linked_outside(s: Setup) -> tuple[Path, str]:
    _index({"model.norm.weight": "model.safetensors"}, "")(s)
    return _outside_link("model.safetensors.index.json")(s)


def _gguf_patch(mutate: Callable[[bytearray], None], expect: str) -> Callable[[Setup], tuple[Path, str]]:
    """Patch the bytes of the setup's good GGUF."""
    def apply(s: Setup) -> tuple[Path, str]:
        data = bytearray(s.gguf.read_bytes())
        mutate(data)
        s.gguf.write_bytes(bytes(data))
        return s.gguf, expect
    return apply


def _set_u64(offset: int, value: int) -> Callable[[bytearray], None]:
    def mutate(data: bytearray) -> None:
        data[offset:offset + 8] = struct.pack("<Q", value)
    return mutate


def _retype_key(key: str, new_type: int) -> Callable[[bytearray], None]:
    """Change a scalar key's value type in place (same width: the file still parses, the type lies)."""
    def mutate(data: bytearray) -> None:
        encoded = key.encode()
        at = data.index(struct.pack("<Q", len(encoded)) + encoded) + 8 + len(encoded)
        data[at:at + 4] = struct.pack("<I", new_type)
    return mutate


def _truncate_gguf(data: bytearray) -> None:
    del data[len(data) // 3:]


def _long_output_name(s: Setup) -> tuple[Path, str]:
    s.out = s.root / ("o" * 300)  # NAME_MAX is 255: ENAMETOOLONG
    return s.out, "name too long"


def _lengths_beyond_everything(s: Setup) -> tuple[str, str]:
    s.extra_args = ["--lengths", "2000000000"]
    return "2000000000", "limit of a case"


GGUF_L_ORIG = "longrope_convert.original_max_position_embeddings"
GGUF_FLOAT32 = 6
NESTED = "[" * 100_000 + "]" * 100_000

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
    # --- Reliability II: hostile inputs must be refused (exit 2), never crash (exit 3) ---
    Case("factor with underscore", "factors", _factor_text("1_5\n" + "1.0\n" * 7, "'1_5' is not a number")),
    Case("decimal commas", "factors", _factor_text("1,1 1,2 1,3 1,4\n1,5 1,6 1,7 1,8\n",
                                                     "looks like a decimal comma: use '.'")),
    Case("factor overflowing float32", "factors", _factor_text("1e300\n" + "1.0\n" * 7, "overflows float32")),
    Case("factor underflowing float32", "factors", _factor_text("1e-300\n" + "1.0\n" * 7, "underflows float32")),
    Case("deeply nested factor JSON", "factors", _factor_text(NESTED, "nested too deeply")),
    Case("factor JSON with a 5000-digit integer", "factors", _factor_text("[1" + "0" * 5000 + "]", "not valid JSON")),
    Case("non-numeric rope_theta", "config",
         _config(lambda c: c.update(rope_theta="10k"), "'rope_theta' must be a finite number > 0, got '10k'")),
    Case("non-numeric max_position_embeddings", "config",
         _config(lambda c: c.update(max_position_embeddings="long"), "'max_position_embeddings' must be a positive")),
    Case("non-numeric original_max_position_embeddings", "config",
         _config(lambda c: c.update(original_max_position_embeddings=[4096]),
                 "'original_max_position_embeddings' must be a positive integer")),
    Case("non-numeric rms_norm_eps", "config",
         _config(lambda c: c.update(rms_norm_eps="1e-5"), "'rms_norm_eps' must be a finite number")),
    Case("deeply nested config.json", "config", _config(lambda c: '{"a": ' * 100_000, "nested too deeply")),
    Case("partial_rotary_factor 0", "config",
         _config(lambda c: c.update(partial_rotary_factor=0), "'partial_rotary_factor' must be in (0, 1]")),
    Case("num_hidden_layers 1e9 (float)", "config",
         _config(lambda c: c.update(num_hidden_layers=1e9), "'num_hidden_layers' must be a positive integer")),
    Case("num_hidden_layers 10**9", "config",
         _config(lambda c: c.update(num_hidden_layers=10**9), "'num_hidden_layers' must be a positive integer")),
    Case("num_hidden_layers 10**7", "config",
         _config(lambda c: c.update(num_hidden_layers=10**7), "'num_hidden_layers' is 10000000 but the weights hold 2")),
    Case("config.json linked outside", "config", _outside_link("config.json")),
    Case("config.json is a FIFO", "config", _fifo("config.json")),
    Case("index weight_map values not names", "weights", _index({"model.norm.weight": 5}, "plain file names")),
    Case("index weight_map a list", "weights", _index(["model.safetensors"], "index has no 'weight_map'")),
    Case("deeply nested index", "weights", _index(NESTED, "nested too deeply")),
    Case("index linked outside", "weights", _index_linked_outside),
    Case("safetensors offsets not numbers", "weights",
         _header(lambda h: _tensors(h)[0].update(data_offsets=["0", "4"]), "malformed header entry")),
    Case("safetensors offsets a single number", "weights",
         _header(lambda h: _tensors(h)[0].update(data_offsets=7), "malformed header entry")),
    Case("safetensors shape negative", "weights",
         _header(lambda h: _tensors(h)[0].update(shape=[-1, 4]), "malformed header entry")),
    Case("safetensors tensors overlap", "weights", _header(_overlap, "overlaps the tensor before it")),
    Case("safetensors gap between tensors", "weights", _header(_gap, "leaves a gap before it")),
    Case("safetensors tensor named twice", "weights", _duplicate_tensor),
    Case("weights linked outside", "weights", _outside_link("model.safetensors")),
    Case("weights are a FIFO", "weights", _fifo("model.safetensors")),
    Case("tokenizer.json is a list", "tokenizer", _bpe_tokenizer("[1, 2, 3]", "expected a JSON object, got a list")),
    Case("tokenizer.json without model", "tokenizer", _bpe_tokenizer('{"version": "1.0"}', "has no 'model' object")),
    Case("deeply nested tokenizer.json", "tokenizer", _bpe_tokenizer(NESTED, "nested too deeply")),
    Case("tokenizer_config.json is a list", "tokenizer",
         _write("tokenizer_config.json", "[]", "expected a JSON object, got a list")),
    Case("600 MB tokenizer_config.json", "companion", _sparse("tokenizer_config.json", 600 << 20, "byte limit")),
    Case("tokenizer.model linked outside", "companion", _outside_link("tokenizer.model")),
    Case("tokenizer.model is a FIFO", "companion", _fifo("tokenizer.model")),
    Case("GGUF tensor count lies", "gguf", _gguf_patch(_set_u64(8, 2**40), "not a readable GGUF file")),
    Case("GGUF key count lies", "gguf", _gguf_patch(_set_u64(16, 10**6), "not a readable GGUF file")),
    Case("GGUF truncated", "gguf", _gguf_patch(_truncate_gguf, "not a readable GGUF file")),
    Case("GGUF key of the wrong type", "gguf",
         _gguf_patch(_retype_key(GGUF_L_ORIG, GGUF_FLOAT32), f"GGUF key {GGUF_L_ORIG} has type FLOAT32")),
    Case("output name too long", "output", _long_output_name),
    Case("--lengths 2000000000", "lengths", _lengths_beyond_everything),
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


def _hf_to_gguf_vocab_argv(s: Setup) -> list[str]:
    return ["hf-to-gguf", str(s.src), "-o", str(s.out)]


def _inspect_gguf_argv(s: Setup) -> list[str]:
    return ["inspect", str(s.gguf)]


def _verify_gguf_argv(s: Setup) -> list[str]:
    return ["verify", str(s.src), "--gguf", str(s.gguf), "--lengths", "64", "--json", str(s.out)]


COMMANDS = [
    Command("bake", ("factors", "config", "weights", "output"), False, _bake_argv),
    Command("inspect", ("config",), True, _inspect_argv),
    Command("hf-to-gguf", ("factors", "config", "weights", "output"), False, _hf_to_gguf_argv),
    Command("export-onnx", ("config", "weights", "output"), True, _export_onnx_argv),
    Command("verify", ("config", "weights", "lengths"), True, _verify_argv),  # report paths: tests/verify/test_verify_cli.py
    Command("hf-to-gguf with vocab", ("tokenizer", "companion"), True, _hf_to_gguf_vocab_argv),
    Command("bake companions", ("companion",), True, _bake_argv),
    Command("inspect GGUF", ("gguf",), True, _inspect_gguf_argv),
    Command("verify --gguf", ("gguf",), True, _verify_gguf_argv),
]
