"""The LongRoPE spec inside a GGUF: our `longrope_convert.*` keys and llama.cpp's rope keys (formats/gguf/reader.py
reads them back).

llama.cpp reads only its own keys and tensors; the `longrope_convert.*` keys keep the exact float64 factors,
L_orig, max positions, theta, rotary dim and whether the attention factor was explicit, so `inspect` (and the
verifier) can recover the very spec the file was made from.
"""

from __future__ import annotations

import gguf

from ..factor_set import FactorSet
from ..spec import LongRopeSpec

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
# PhiMoE's short/long_mscale, written only when the spec has them (llama.cpp itself has one attn_factor)
KEY_SET_ATTENTION = {"short_attention_factor": f"{PREFIX}.short_attention_factor",
                     "long_attention_factor": f"{PREFIX}.long_attention_factor"}
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
    for field_name, key in KEY_SET_ATTENTION.items():
        if getattr(spec, field_name) is not None:
            writer.add_float64(key, getattr(spec, field_name))
    writer.add_string(KEY_FACTOR_SETS, factor_sets)
    writer.add_string(KEY_VERSION, version)


def add_rope_keys(writer: gguf.GGUFWriter, spec: LongRopeSpec, mark_longrope: bool) -> None:
    """llama.cpp's own keys. Never `rope.scaling.factor`: llama.cpp would compress positions a second time."""
    writer.add_context_length(spec.max_position_embeddings)
    writer.add_rope_dimension_count(spec.rotary_dim)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_rope_scaling_orig_ctx_len(spec.original_max_position_embeddings)
    # one key for both sets: with PhiMoE's differing short/long_mscale the long one (docs/phimoe.md)
    writer.add_rope_scaling_attn_factors(spec.attention_factor_for(FactorSet.LONG))
    if mark_longrope:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
