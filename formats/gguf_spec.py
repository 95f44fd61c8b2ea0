"""The LongRoPE spec inside a GGUF: our `longrope_convert.*` keys, llama.cpp's rope keys, and reading them back.

llama.cpp reads only its own keys and tensors; the `longrope_convert.*` keys keep the exact float64 factors,
L_orig, max positions, theta, rotary dim and whether the attention factor was explicit, so `inspect` (and the
verifier) can recover the very spec the file was made from.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gguf

from .errors import CheckpointError
from .spec import LongRopeSpec

V = gguf.GGUFValueType
PREFIX = "longrope_convert"
KEY_LONG = f"{PREFIX}.long_factor"
KEY_SHORT = f"{PREFIX}.short_factor"
KEY_L_ORIG = f"{PREFIX}.original_max_position_embeddings"
KEY_MAX = f"{PREFIX}.max_position_embeddings"
KEY_THETA = f"{PREFIX}.rope_theta"
KEY_ROTARY_DIM = f"{PREFIX}.rotary_dim"
KEY_ATTENTION = f"{PREFIX}.attention_factor"
KEY_EXPLICIT = f"{PREFIX}.attention_factor_explicit"
KEY_FACTOR_SETS = f"{PREFIX}.factor_sets"
KEY_VERSION = f"{PREFIX}.version"


def add_spec_metadata(writer: gguf.GGUFWriter, spec: LongRopeSpec, factor_sets: str, version: str) -> None:
    """Record the spec under `longrope_convert.*` (float64, exact)."""
    writer.add_key_value(KEY_LONG, list(spec.long_factor), V.ARRAY, sub_type=V.FLOAT64)
    writer.add_key_value(KEY_SHORT, list(spec.short_factor), V.ARRAY, sub_type=V.FLOAT64)
    writer.add_uint32(KEY_L_ORIG, spec.original_max_position_embeddings)
    writer.add_uint32(KEY_MAX, spec.max_position_embeddings)
    writer.add_float64(KEY_THETA, spec.rope_theta)
    writer.add_uint32(KEY_ROTARY_DIM, spec.rotary_dim)
    writer.add_float64(KEY_ATTENTION, spec.attention_factor)
    writer.add_bool(KEY_EXPLICIT, spec.explicit_attention_factor is not None)
    writer.add_string(KEY_FACTOR_SETS, factor_sets)
    writer.add_string(KEY_VERSION, version)


def add_rope_keys(writer: gguf.GGUFWriter, spec: LongRopeSpec, mark_longrope: bool) -> None:
    """llama.cpp's own keys. Never `rope.scaling.factor`: llama.cpp would compress positions a second time."""
    writer.add_context_length(spec.max_position_embeddings)
    writer.add_rope_dimension_count(spec.rotary_dim)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_rope_scaling_orig_ctx_len(spec.original_max_position_embeddings)
    writer.add_rope_scaling_attn_factors(spec.attention_factor)
    if mark_longrope:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)


def read_gguf_spec(path: str | Path) -> LongRopeSpec | None:
    """The LongRoPE spec a GGUF carries: our keys when present, else llama.cpp's factor tensors and rope keys
    (e.g. a Phi-3 GGUF made by llama.cpp's converter); None when it has neither."""
    reader = open_gguf(Path(path))
    fields = gguf_fields(reader)
    if KEY_LONG in fields:
        return _spec_from_our_keys(fields)
    return _spec_from_llama_cpp(reader, fields)


def open_gguf(path: Path) -> gguf.GGUFReader:
    """A GGUFReader, or a one-line error for a file that is not GGUF."""
    try:
        return gguf.GGUFReader(path)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"not a readable GGUF file ({exc})", path) from None


def gguf_fields(reader: gguf.GGUFReader) -> dict:
    """Every metadata key with its value as plain Python (str, int, float, or a list of them)."""
    return {name: field_value(f) for name, f in reader.fields.items()}


def field_value(field: gguf.ReaderField):
    """One metadata field as plain Python."""
    if not field.types:
        return None
    if field.types[0] == V.ARRAY:
        if len(field.types) > 1 and field.types[1] == V.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i][0].item() for i in field.data]
    if field.types[0] == V.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]][0].item()


def _spec_from_our_keys(fields: dict) -> LongRopeSpec:
    explicit = fields.get(KEY_EXPLICIT)
    return LongRopeSpec(
        long_factor=tuple(fields[KEY_LONG]),
        short_factor=tuple(fields[KEY_SHORT]),
        original_max_position_embeddings=int(fields[KEY_L_ORIG]),
        max_position_embeddings=int(fields[KEY_MAX]),
        rope_theta=float(fields[KEY_THETA]),
        rotary_dim=int(fields[KEY_ROTARY_DIM]),
        explicit_attention_factor=float(fields[KEY_ATTENTION]) if explicit else None,
        rotary_dim_source="GGUF longrope_convert.rotary_dim",
    )


def _spec_from_llama_cpp(reader: gguf.GGUFReader, fields: dict) -> LongRopeSpec | None:
    tensors = {t.name: t for t in reader.tensors}
    names = [gguf.TENSOR_NAMES[t] + ".weight" for t in (gguf.MODEL_TENSOR.ROPE_FACTORS_LONG,
                                                          gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT)]
    if not all(n in tensors for n in names):
        return None
    arch = fields.get(gguf.Keys.General.ARCHITECTURE)
    key = lambda k: fields.get(k.format(arch=arch))  # noqa: E731
    long, short = (tuple(float(x) for x in tensors[n].data) for n in names)
    l_orig = key(gguf.Keys.Rope.SCALING_ORIG_CTX_LEN) or key(gguf.Keys.LLM.CONTEXT_LENGTH)
    spec = LongRopeSpec(
        long_factor=long,
        short_factor=short,
        original_max_position_embeddings=int(l_orig),
        max_position_embeddings=int(key(gguf.Keys.LLM.CONTEXT_LENGTH) or l_orig),
        rope_theta=float(key(gguf.Keys.Rope.FREQ_BASE) or 10000.0),
        rotary_dim=2 * len(long),
        rotary_dim_source="GGUF rope_factors_long length",
    )
    attn = key(gguf.Keys.Rope.SCALING_ATTN_FACTOR)
    # stored as float32: within float32 rounding of the default it is the default, not an explicit choice
    if attn is not None and abs(attn - spec.attention_factor_default) > 1e-6 * spec.attention_factor_default:
        spec = replace(spec, explicit_attention_factor=float(attn))
    return spec
