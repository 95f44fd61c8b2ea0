"""An HF checkpoint folder on disk: its weight files (safetensors only), validated without loading them."""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError
from ..input_paths import confined_file, present
from ..json_io import parse_json, read_json

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
    """The safetensors files of a checkpoint, from the index when there is one; refuses pickle-only weights.
    Every file is confined to the checkpoint (formats/input_paths.py) before anything opens it."""
    if present(folder, INDEX_NAME):
        index = confined_file(folder, INDEX_NAME)
        data = read_json(index, CheckpointError)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError("index has no 'weight_map'", index)
        for name in weight_map.values():
            _check_shard_name(name, index)
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not present(folder, n)]
        if missing:
            raise CheckpointError(f"index names {len(missing)} missing shard(s), first {missing[0]!r}", index)
        return [confined_file(folder, n) for n in names]
    if present(folder, SINGLE_NAME):
        return [confined_file(folder, SINGLE_NAME)]
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    if shards:
        return [confined_file(folder, n) for n in shards]
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
    """Parse and check a safetensors header against the file size, with the safetensors library's own rules
    (safetensors >= 0.4 `validate`): no duplicate names, and the tensors' byte ranges tile the data section in
    order, no gap, no overlap, nothing after. Catches truncation and lying headers before anything maps data."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read below forever
            raise CheckpointError("not a regular file; weights must be regular files", path)
        size = info.st_size
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
    header = parse_json(raw, path, CheckpointError, "safetensors header", reject_duplicates=True)
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header is not a JSON object", path)
    return _tensor_infos(path, header, 8 + header_len, size)


def _tensor_infos(path: Path, header: dict, data_start: int, size: int) -> list[TensorInfo]:
    infos = []
    data_len = size - data_start
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        infos.append(_tensor_info(path, name, meta, data_start, data_len))
    _check_tiling(path, infos, data_start, data_len)
    return infos


def _tensor_info(path: Path, name: str, meta, data_start: int, data_len: int) -> TensorInfo:
    """One header entry, its types, dtype and byte count checked."""
    try:
        dtype, shape, offsets = meta["dtype"], meta["shape"], meta["data_offsets"]
        if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
            raise TypeError
        begin, end = offsets
        if not (_is_count(begin) and _is_count(end)):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"tensor {name!r} has a malformed header entry", path) from None
    width = DTYPE_BYTES.get(dtype) if isinstance(dtype, str) else None
    if width is None:
        raise CheckpointError(f"tensor {name!r} has unsupported dtype {dtype!r}", path)
    if not (begin <= end <= data_len) or end - begin != math.prod(shape) * width:
        raise CheckpointError(
            f"tensor {name!r} claims bytes {begin}..{end} but the data section holds {data_len} (truncated or lying header)",
            path,
        )
    return TensorInfo(name, dtype, tuple(shape), path, data_start + begin, data_start + end)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_tiling(path: Path, infos: list[TensorInfo], data_start: int, data_len: int) -> None:
    """The byte ranges, sorted, must follow each other exactly and end at the end of the file, as safetensors
    requires: an overlap would let two tensors share bytes, a gap or a tail hides data nobody validates."""
    expected = data_start
    for info in sorted(infos, key=lambda i: (i.begin, i.end, i.name)):
        if info.begin != expected:
            kind = "overlaps the tensor before it" if info.begin < expected else "leaves a gap before it"
            raise CheckpointError(f"tensor {info.name!r} at bytes {info.begin - data_start}..{info.end - data_start} "
                                  f"{kind} (safetensors requires contiguous data)", path)
        expected = info.end
    if expected != data_start + data_len:
        raise CheckpointError(f"{data_start + data_len - expected} bytes after the last tensor's data "
                              "(safetensors requires the data to end the file)", path)


def checkpoint_tensors(folder: Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint by name, headers validated, nothing loaded."""
    tensors: dict[str, TensorInfo] = {}
    for f in weight_files(folder):
        for info in read_safetensors_header(f):
            if info.name in tensors:
                raise CheckpointError(f"tensor {info.name!r} appears in two shards", f)
            tensors[info.name] = info
    return tensors
