"""The LongRoPE spec stored in any artifact: a checkpoint folder, a GGUF file, an ONNX export (folder or file)."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, LongRopeError, SpecError
from .hf.checkpoint import open_checkpoint
from .hf.config import read_config, spec_from_config
from .hf.rope_keys import DEFAULT_ROPE_THETA, check_rope_numbers
from .hf.tensor_index import INDEX_NAME
from .input_paths import present
from .json_io import read_json
from .spec import LongRopeSpec


class NotLongRopeError(LongRopeError):
    """The input holds no LongRoPE spec."""


def _spec_from_checkpoint(path: Path) -> LongRopeSpec:
    checkpoint = open_checkpoint(path)
    if checkpoint.spec is None:
        raise NotLongRopeError("has no longrope rope_scaling/rope_parameters", checkpoint.config_path)
    return checkpoint.spec


def _spec_from_config_file(path: Path) -> LongRopeSpec:
    """A checkpoint's config.json named as a file: the spec its folder gives (so `inspect SRC` and
    `inspect SRC/config.json` agree), read from the config alone when no weights sit beside it."""
    if _has_weights(path.parent):
        return _spec_from_checkpoint(path.parent)
    config = read_config(path)
    check_rope_numbers(config, str(path))
    spec = spec_from_config(config, str(path))
    if spec is None:
        raise NotLongRopeError("has no longrope rope_scaling/rope_parameters", path)
    return spec


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or (folder / INDEX_NAME).exists()


def _spec_from_gguf(path: Path) -> LongRopeSpec:
    from .gguf.reader import read_gguf_longrope

    try:
        spec, problem = read_gguf_longrope(path)  # problem: our keys without the tensors llama.cpp reads
    except SpecError as exc:  # numbers of the right types that make no spec (rotary dim 3, L_orig 0)
        raise NotLongRopeError(f"GGUF LongRoPE keys make no valid spec: {exc}", path) from None
    if spec is None:
        raise NotLongRopeError("GGUF carries no LongRoPE factors (no longrope_convert keys, no factor tensors)", path)
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
    (lambda p: p.is_dir() and present(p, "config.json"), _spec_from_checkpoint),  # a FIFO or link: refused there
    (lambda p: p.is_file() and p.name == "config.json", _spec_from_config_file),
    (lambda p: p.suffix.lower() == ".gguf", _spec_from_gguf),
    (lambda p: p.is_dir() and (p / "model.onnx").is_file(), _spec_from_onnx),
    (lambda p: p.suffix.lower() == ".onnx", _spec_from_onnx),
)


def read_any_spec(path: Path) -> LongRopeSpec | None:
    """The spec stored in a checkpoint folder (or its config.json), GGUF or ONNX, or given by a factor file
    that carries its context lengths (a config excerpt); None for a bare factor file."""
    for matches, reader in SPEC_READERS:
        if matches(path):
            return reader(path)
    if path.is_dir():
        raise LongRopeError("not found; the folder is neither a checkpoint nor an ONNX export", path / "config.json")
    return spec_from_factor_file(path)


def spec_from_factor_file(path: Path, defaults: LongRopeSpec | None = None) -> LongRopeSpec | None:
    """The spec a config excerpt describes: its factors and the context lengths and theta it carries, else those
    of `defaults` (the checkpoint it is compared with), else theta 10000. None when the lengths are unknown."""
    from .factor_files import read_factor_file
    from .factor_set import FactorSet
    from .spec import plain_factors

    contents = read_factor_file(path)
    long = contents.vector_for(FactorSet.LONG)
    l_orig = contents.original_max_position_embeddings or (defaults and defaults.original_max_position_embeddings)
    max_pos = contents.max_position_embeddings or (defaults and defaults.max_position_embeddings)
    if not l_orig or not max_pos or long is None:
        return None
    dim = 2 * len(long)
    if defaults is not None and dim != defaults.rotary_dim:
        raise SpecError(f"holds {len(long)} long factors (rotary dim {dim}), the checkpoint's rotary dim is "
                        f"{defaults.rotary_dim}", path)
    theta = contents.rope_theta or (defaults.rope_theta if defaults else DEFAULT_ROPE_THETA)
    try:
        return LongRopeSpec(long_factor=long, short_factor=contents.vector_for(FactorSet.SHORT) or plain_factors(dim),
                            original_max_position_embeddings=l_orig, max_position_embeddings=max_pos,
                            rope_theta=theta, rotary_dim=dim, rotary_dim_source=f"{len(long)} long factors in {path.name}")
    except SpecError as exc:
        raise SpecError(str(exc), path) from None


def reference_spec(path: Path, own: LongRopeSpec) -> LongRopeSpec | None:
    """`verify --reference-spec PATH`: a checkpoint folder or full config.json (its spec), or a factor file
    such as a config excerpt (its factors, with its context lengths where it carries them, else SRC's)."""
    source = path / "config.json" if path.is_dir() else path
    if path.is_dir():
        config = read_config(path)
    else:  # a JSON list is a factor file, not a config
        config = read_json(path, ConfigError) if path.suffix.lower() == ".json" else None
    if isinstance(config, dict) and (path.is_dir() or "hidden_size" in config):  # a whole config: its geometry counts
        check_rope_numbers(config, str(source))
        return spec_from_config(config, str(source))
    return spec_from_factor_file(path, own)
