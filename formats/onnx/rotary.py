"""LongRoPE inside the ONNX graph: both inverse-frequency tables are initializers taken from the spec, and the
graph picks one per forward with the transformers rule (long iff past + current length > L_orig).

The tables come from `LongRopeSpec.inv_freq_list`; nothing here recomputes rope frequencies. Angles are formed
in float32 (as transformers does) whatever the model dtype; cos/sin carry the spec's attention factor.
LongRoPE v1's n_hat (`spec.start_tokens`): positions below it take plain RoPE cos/sin without the attention
factor, chosen per position with a `Where`, for either set and across the KV cache. A spec without n_hat adds
no node, so plain graphs stay byte-identical.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..errors import SpecError
from ..factor_set import FactorSet
from ..spec import LongRopeSpec
from .graph_builder import GraphBuilder

LONG_INV_FREQ = "longrope.inv_freq.long"
SHORT_INV_FREQ = "longrope.inv_freq.short"
ATTENTION_FACTOR = "longrope.attention_factor"
PLAIN_INV_FREQ = "longrope.inv_freq.plain"  # only in graphs with n_hat start tokens
TABLE_NAMES = {FactorSet.LONG: LONG_INV_FREQ, FactorSet.SHORT: SHORT_INV_FREQ}


def inv_freq_table(b: GraphBuilder, spec: LongRopeSpec, total_length: str, frozen: FactorSet | None) -> str:
    """The [rotary_dim/2] float32 inv_freq for this forward.

    `total_length` is an int64 scalar (past + current tokens). `frozen` bakes one set with no selection: the
    graph a TorchScript trace at one example length produces, kept only to prove that our checks catch it.
    """
    if frozen is not None:
        return b.initializer(TABLE_NAMES[frozen], _table(spec, frozen))
    long = b.initializer(LONG_INV_FREQ, _table(spec, FactorSet.LONG))
    short = b.initializer(SHORT_INV_FREQ, _table(spec, FactorSet.SHORT))
    l_orig = b.const(spec.original_max_position_embeddings, np.int64)
    is_long = b.op("Greater", total_length, l_orig, name="rope/is_long")
    return b.op("Where", is_long, long, short, name="rope/inv_freq")


def _table(spec: LongRopeSpec, which: FactorSet) -> np.ndarray:
    return np.asarray(spec.inv_freq_list(which), dtype=np.float32)


def rotary_cos_sin(b: GraphBuilder, spec: LongRopeSpec, position_ids: str, inv_freq: str,
                   dtype: int) -> tuple[str, str]:
    """cos and sin of shape [batch, seq, 1, rotary_dim] (HF half layout), times the attention factor; positions
    below `spec.start_tokens` (n_hat) get plain cos/sin without it."""
    pos = b.op("Cast", position_ids, to=TensorProto.FLOAT, name="rope/positions")
    pos = b.op("Unsqueeze", pos, b.const([-1]))
    emb = _embedded_angles(b, pos, inv_freq, "rope")
    if spec.has_per_set_attention_factors:  # PhiMoE short_mscale != long_mscale: not in the graph yet
        raise SpecError("the ONNX graph has one attention factor; short_mscale != long_mscale is not supported "
                        f"(short {spec.attention_factor_for(FactorSet.SHORT)}, long "
                        f"{spec.attention_factor_for(FactorSet.LONG)})")
    scale = b.initializer(ATTENTION_FACTOR, np.asarray(spec.attention_factor_for(FactorSet.LONG), np.float32))
    plain = _plain_cos_sin(b, spec, position_ids, pos) if spec.start_tokens > 0 else None
    out = []
    for fn in ("Cos", "Sin"):
        value = b.op("Mul", b.op(fn, emb), scale, name=f"rope/{fn.lower()}")
        if plain is not None:
            keep_plain, plain_values = plain
            value = b.op("Where", keep_plain, plain_values[fn], value, name=f"rope/{fn.lower()}_start_tokens")
        if dtype != TensorProto.FLOAT:
            value = b.op("Cast", value, to=dtype)
        out.append(b.op("Unsqueeze", value, b.const([2])))
    return out[0], out[1]


def _embedded_angles(b: GraphBuilder, pos: str, inv_freq: str, prefix: str) -> str:
    """position x inv_freq, repeated for both halves: [batch, seq, rotary_dim] float32."""
    angles = b.op("Mul", pos, inv_freq, name=f"{prefix}/angles")
    return b.op("Concat", angles, angles, axis=-1)


def _plain_cos_sin(b: GraphBuilder, spec: LongRopeSpec, position_ids: str, pos: str) -> tuple[str, dict[str, str]]:
    """n_hat: a bool [batch, seq, 1] 'position < n_hat' and plain RoPE cos/sin (factors 1, no attention factor).

    The test is on absolute position ids, so cached decoding keeps it right: a step's position decides, never the
    current length; the plain table comes from the spec (`inv_freq_list(None)`), like the two LongRoPE tables."""
    plain_table = b.initializer(PLAIN_INV_FREQ, np.asarray(spec.inv_freq_list(None), dtype=np.float32))
    emb = _embedded_angles(b, pos, plain_table, "rope/plain")
    n_hat = b.const(spec.start_tokens, np.int64)
    keep_plain = b.op("Unsqueeze", b.op("Less", position_ids, n_hat, name="rope/is_start_token"), b.const([-1]))
    return keep_plain, {fn: b.op(fn, emb, name=f"rope/plain_{fn.lower()}") for fn in ("Cos", "Sin")}


def apply_rotary(b: GraphBuilder, x: str, cos: str, sin: str, head_dim: int, rotary_dim: int) -> str:
    """Rotate the first `rotary_dim` dims of each head of x [batch, seq, heads, head_dim]; the rest pass."""
    half = rotary_dim // 2
    rot = x if rotary_dim == head_dim else _slice_last(b, x, 0, rotary_dim)
    x1, x2 = _slice_last(b, rot, 0, half), _slice_last(b, rot, half, rotary_dim)
    rotated = b.op("Concat", b.op("Neg", x2), x1, axis=-1)
    out = b.op("Add", b.op("Mul", rot, cos), b.op("Mul", rotated, sin), name="rope/rotated")
    if rotary_dim == head_dim:
        return out
    return b.op("Concat", out, _slice_last(b, x, rotary_dim, head_dim), axis=-1)


def _slice_last(b: GraphBuilder, x: str, start: int, end: int) -> str:
    return b.op("Slice", x, b.const([start]), b.const([end]), b.const([-1]))
