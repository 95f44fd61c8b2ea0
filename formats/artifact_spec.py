"""The LongRoPE spec stored in any artifact: a checkpoint folder, a GGUF file, an ONNX export (folder or file)."""

from __future__ import annotations

from pathlib import Path

from .errors import LongRopeError
from .hf.checkpoint import open_checkpoint
from .spec import LongRopeSpec


class NotLongRopeError(LongRopeError):
    """The input holds no LongRoPE spec."""


def _spec_from_checkpoint(path: Path) -> LongRopeSpec:
    checkpoint = open_checkpoint(path)
    if checkpoint.spec is None:
        raise NotLongRopeError("has no longrope rope_scaling/rope_parameters", checkpoint.config_path)
    return checkpoint.spec


def _spec_from_gguf(path: Path) -> LongRopeSpec:
    from .gguf.reader import read_gguf_factor_problem, read_gguf_spec

    spec = read_gguf_spec(path)
    if spec is None:
        raise NotLongRopeError("GGUF carries no LongRoPE factors (no longrope_convert keys, no factor tensors)", path)
    problem = read_gguf_factor_problem(path)  # our keys without the tensors llama.cpp reads
    if problem:
        raise NotLongRopeError(f"GGUF has LongRoPE keys but {problem}", path)
    return spec


def _spec_from_onnx(path: Path) -> LongRopeSpec:
    from .onnx.metadata import read_metadata, spec_from_metadata

    model = path if path.is_file() else path / "model.onnx"
    if not model.is_file():
        raise NotLongRopeError("no model.onnx in the folder", path)
    try:
        props = read_metadata(model)
    except Exception as exc:  # protobuf raises its own DecodeError for non-ONNX bytes
        raise NotLongRopeError(f"not a readable ONNX model ({type(exc).__name__})", model) from None
    return spec_from_metadata(props, str(model))


# How to read each kind of input; the first whose test matches wins. Factor files are the fallback.
SPEC_READERS = (
    (lambda p: p.is_dir() and (p / "config.json").is_file(), _spec_from_checkpoint),
    (lambda p: p.suffix.lower() == ".gguf", _spec_from_gguf),
    (lambda p: p.is_dir() and (p / "model.onnx").is_file(), _spec_from_onnx),
    (lambda p: p.suffix.lower() == ".onnx", _spec_from_onnx),
)


def read_any_spec(path: Path) -> LongRopeSpec | None:
    """The spec stored in a checkpoint folder, GGUF or ONNX; None for a bare factor file."""
    for matches, reader in SPEC_READERS:
        if matches(path):
            return reader(path)
    if path.is_dir():
        raise LongRopeError("not found; the folder is neither a checkpoint nor an ONNX export", path / "config.json")
    return None
