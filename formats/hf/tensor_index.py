"""An HF checkpoint folder on disk: its weight files (safetensors only), validated without loading them."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..json_io import read_json

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "consolidated.00.pth")
MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}

# Files carried over to a baked checkpoint besides the weights (tokenizer, generation, licence).
COMPANION_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja", "chat_template.json",
    "LICENSE", "LICENSE.md", "LICENSE.txt", "NOTICE", "USE_POLICY.md",
)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    begin: int  # absolute byte offset of the data in `file`
    end: int


def bf16_bits_to_float32(bits):
    """bfloat16 bit patterns (a uint16 numpy array) as float32: exact, the upper half of the float32 bits."""
    import numpy as np

    return (bits.astype(np.uint32) << 16).view(np.float32)


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint, from the index when there is one; refuses pickle-only weights."""
    index = folder / INDEX_NAME
    if index.exists():
        data = read_json(index, CheckpointError)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError("index has no 'weight_map'", index)
        names = sorted(set(weight_map.values()))
        for name in names:
            _check_shard_name(name, index)
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(f"index names {len(missing)} missing shard(s), first {missing[0]!r}", index)
        return [folder / n for n in names]
    if (folder / SINGLE_NAME).is_file():
        return [folder / SINGLE_NAME]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickles = [n for n in PICKLE_WEIGHTS if (folder / n).exists()]
    if pickles:
        raise CheckpointError(
            f"only pickle weights ({pickles[0]}) found; they can execute code and are never loaded: convert to safetensors",
            folder,
        )
    raise CheckpointError("no model.safetensors or model.safetensors.index.json found", folder)


def _check_shard_name(name, index: Path) -> None:
    """A shard is a plain file name inside the checkpoint folder: no path, no `..`, so an index can neither make
    us read a file outside SRC nor give two shards one name in the baked copy."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise CheckpointError(f"index names shard {name!r}; shards must be plain file names in the checkpoint folder",
                              index)


def read_safetensors_header(path: Path) -> list[TensorInfo]:
    """Parse and check a safetensors header against the file size (catches truncation and lying headers)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise CheckpointError("file is shorter than a safetensors header", path)
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(f"header length {header_len} exceeds the file size {size}", path)
            raw = fh.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"cannot read file ({exc.strerror})", path) from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError("safetensors header is not valid JSON", path) from None
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header is not a JSON object", path)
    return _tensor_infos(path, header, 8 + header_len, size)


def _tensor_infos(path: Path, header: dict, data_start: int, size: int) -> list[TensorInfo]:
    infos = []
    data_len = size - data_start
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(int(s) for s in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"tensor {name!r} has a malformed header entry", path) from None
        count = math.prod(shape)
        width = DTYPE_BYTES.get(dtype)
        if width is None:
            raise CheckpointError(f"tensor {name!r} has unsupported dtype {dtype}", path)
        if not (0 <= begin <= end <= data_len) or end - begin != count * width:
            raise CheckpointError(
                f"tensor {name!r} claims bytes {begin}..{end} but the data section holds {data_len} (truncated or lying header)",
                path,
            )
        infos.append(TensorInfo(name, dtype, shape, path, data_start + begin, data_start + end))
    return infos


def checkpoint_tensors(folder: Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint by name, headers validated, nothing loaded."""
    tensors: dict[str, TensorInfo] = {}
    for f in weight_files(folder):
        for info in read_safetensors_header(f):
            if info.name in tensors:
                raise CheckpointError(f"tensor {info.name!r} appears in two shards", f)
            tensors[info.name] = info
    return tensors
