"""Decoder pieces as ONNX nodes: RMSNorm, attention with GQA and a KV cache, SwiGLU MLP.

Norms and softmax run in float32 whatever the model dtype (as transformers' eager code does), so an fp16
graph only stores and multiplies in fp16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from ..architectures import Role
from ..hf.geometry import ModelGeometry
from ..hf.weights import LayerWeights
from .graph_builder import GraphBuilder
from .moe import MoeNames, add_moe_weights, moe_mlp
from .rotary import apply_rotary


@dataclass(frozen=True)
class Precision:
    """The model dtype as ONNX elem type and numpy dtype, plus the masked-score fill value."""

    elem_type: int
    np_dtype: type

    @property
    def is_fp32(self) -> bool:
        return self.elem_type == TensorProto.FLOAT


PRECISIONS = {
    "fp32": Precision(TensorProto.FLOAT, np.float32),
    "fp16": Precision(TensorProto.FLOAT16, np.float16),
}
MASKED_SCORE = float(np.finfo(np.float32).min)  # scores and softmax are float32


@dataclass(frozen=True)
class LayerNames:
    """Initializer names of one layer (q/k/v and gate/up fused so each is one MatMul)."""

    input_norm: str
    qkv: str
    qkv_bias: str | None
    o: str
    o_bias: str | None
    post_norm: str
    gate_up: str
    gate_up_bias: str | None
    down: str
    down_bias: str | None
    window: int | None  # sliding window of this layer (None: full attention)
    moe: MoeNames | None = None  # a sparse MoE MLP (formats/onnx/moe.py) instead of gate_up/down
    norm: str = "rms"  # the architecture's norm: "rms" or "layer" (LayerNorm with the biases below)
    input_norm_bias: str | None = None
    post_norm_bias: str | None = None


def add_layer_weights(b: GraphBuilder, i: int, w: LayerWeights, window: int | None, p: Precision,
                      norm: str = "rms", jitter_eps: float = 0.01) -> LayerNames:
    """Store one layer's weights as [in, out] MatMul operands (norm weights stay float32); return their names."""
    prefix = f"layers.{i}"

    def put(name: str, array, dtype=p.np_dtype):
        return None if array is None else b.initializer(f"{prefix}.{name}", np.ascontiguousarray(array, dtype=dtype))

    if w.router is not None:  # sparse MoE: the dense MLP fields stay empty
        return LayerNames(
            input_norm=put("input_norm.weight", w.input_norm, np.float32),
            qkv=put("attn.qkv.MatMul.weight", np.concatenate([w.q, w.k, w.v]).T),
            qkv_bias=put("attn.qkv.bias", _fused_bias(w, (Role.Q, Role.K, Role.V), (w.q, w.k, w.v))),
            o=put("attn.o.MatMul.weight", w.o.T), o_bias=put("attn.o.bias", w.bias(Role.O)),
            post_norm=put("post_norm.weight", w.post_norm, np.float32),
            gate_up="", gate_up_bias=None, down="", down_bias=None, window=window,
            moe=add_moe_weights(b, prefix, w, jitter_eps, p.np_dtype), norm=norm,
            input_norm_bias=put("input_norm.bias", w.bias(Role.INPUT_NORM), np.float32),
            post_norm_bias=put("post_norm.bias", w.bias(Role.POST_NORM), np.float32),
        )

    return LayerNames(
        input_norm=put("input_norm.weight", w.input_norm, np.float32),
        qkv=put("attn.qkv.MatMul.weight", np.concatenate([w.q, w.k, w.v]).T),
        qkv_bias=put("attn.qkv.bias", _fused_bias(w, (Role.Q, Role.K, Role.V), (w.q, w.k, w.v))),
        o=put("attn.o.MatMul.weight", w.o.T),
        o_bias=put("attn.o.bias", w.bias(Role.O)),
        post_norm=put("post_norm.weight", w.post_norm, np.float32),
        gate_up=put("mlp.gate_up.MatMul.weight", np.concatenate([w.gate, w.up]).T),
        gate_up_bias=put("mlp.gate_up.bias", _fused_bias(w, (Role.GATE, Role.UP), (w.gate, w.up))),
        down=put("mlp.down.MatMul.weight", w.down.T),
        down_bias=put("mlp.down.bias", w.bias(Role.DOWN)),
        window=window,
    )


def _fused_bias(w: LayerWeights, roles: tuple[Role, ...], weights: tuple[np.ndarray, ...]) -> np.ndarray | None:
    """The biases of fused projections as one vector (zeros for a missing one), or None when there are none."""
    biases = [w.bias(r) for r in roles]
    if all(b is None for b in biases):
        return None
    return np.concatenate([b if b is not None else np.zeros(m.shape[0], np.float32) for b, m in zip(biases, weights)])


def rms_norm(b: GraphBuilder, x: str, weight: str, eps: float, p: Precision) -> str:
    """weight * x / sqrt(mean(x^2) + eps), computed in float32, returned in the model dtype."""
    x32 = x if p.is_fp32 else b.op("Cast", x, to=TensorProto.FLOAT)
    mean_sq = _mean_last_axis(b, b.op("Mul", x32, x32))
    inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", mean_sq, b.const(eps, np.float32))))
    out = b.op("Mul", b.op("Mul", x32, inv), weight, name="rms_norm")
    return out if p.is_fp32 else b.op("Cast", out, to=p.elem_type)


def layer_norm(b: GraphBuilder, x: str, weight: str, bias: str | None, eps: float, p: Precision) -> str:
    """weight * (x - mean) / sqrt(var + eps) + bias (nn.LayerNorm, biased variance), in float32."""
    x32 = x if p.is_fp32 else b.op("Cast", x, to=TensorProto.FLOAT)
    centred = b.op("Sub", x32, _mean_last_axis(b, x32))
    var = _mean_last_axis(b, b.op("Mul", centred, centred))
    inv = b.op("Reciprocal", b.op("Sqrt", b.op("Add", var, b.const(eps, np.float32))))
    out = b.op("Mul", b.op("Mul", centred, inv), weight, name="layer_norm")
    if bias is not None:
        out = b.op("Add", out, bias)
    return out if p.is_fp32 else b.op("Cast", out, to=p.elem_type)


def norm(b: GraphBuilder, x: str, weight: str, bias: str | None, kind: str, eps: float, p: Precision) -> str:
    """The architecture's norm (Architecture.norm): RMSNorm (weight only) or LayerNorm with its bias."""
    return layer_norm(b, x, weight, bias, eps, p) if kind == "layer" else rms_norm(b, x, weight, eps, p)


def _mean_last_axis(b: GraphBuilder, x: str) -> str:
    """ReduceMean over the last axis; its axes moved from an attribute to an input in opset 18."""
    if b.opset >= 18:
        return b.op("ReduceMean", x, b.const([-1]), keepdims=1)
    return b.op("ReduceMean", x, axes=[-1], keepdims=1)


def linear(b: GraphBuilder, x: str, weight: str, bias: str | None) -> str:
    y = b.op("MatMul", x, weight)
    return y if bias is None else b.op("Add", y, bias)


def mlp(b: GraphBuilder, x: str, names: LayerNames, geo: ModelGeometry) -> str:
    """down(silu(gate(x)) * up(x)) with gate and up as one MatMul."""
    inter = geo.intermediate_size
    gate_up = linear(b, x, names.gate_up, names.gate_up_bias)
    gate, up = b.op("Split", gate_up, b.const([inter, inter]), axis=-1, outputs=2)
    act = b.op("Mul", gate, b.op("Sigmoid", gate), name="silu")
    return linear(b, b.op("Mul", act, up), names.down, names.down_bias)


@dataclass(frozen=True)
class GqaLengths:
    """The int32 length inputs of com.microsoft.GroupQueryAttention, computed once per forward."""

    seqlens_k: str  # [batch]: attended tokens per row - 1 (sum of attention_mask - 1)
    total_length: str  # scalar: attention_mask width (past + current)


@dataclass(frozen=True)
class AttentionInputs:
    """Per-forward tensors shared by every layer."""

    cos: str
    sin: str
    allowed: dict[int | None, str]  # standard form: window -> bool [batch, 1, 1, seq, total] (causal, window, padding)
    gqa: GqaLengths | None = None  # set: layers use the fused GroupQueryAttention op instead of plain ops


GQA_DOMAIN = "com.microsoft"
NO_WINDOW = -1  # GroupQueryAttention's local_window_size for full attention


def attention(b: GraphBuilder, x: str, names: LayerNames, geo: ModelGeometry, shared: AttentionInputs,
              past: tuple[str, str] | None, p: Precision) -> tuple[str, str, str]:
    """Self-attention; returns (output, key cache, value cache), keys stored after rotation (never re-rotated)."""
    h, kv, d = geo.num_heads, geo.num_kv_heads, geo.head_dim
    q, k, v = b.op("Split", linear(b, x, names.qkv, names.qkv_bias), b.const([h * d, kv * d, kv * d]),
                   axis=-1, outputs=3)
    q = apply_rotary(b, b.op("Reshape", q, b.const([0, 0, h, d])), shared.cos, shared.sin, d, geo.rotary_dim)
    k = apply_rotary(b, b.op("Reshape", k, b.const([0, 0, kv, d])), shared.cos, shared.sin, d, geo.rotary_dim)
    core = _gqa_core if shared.gqa is not None else _standard_core
    out, k, v = core(b, q, k, v, names, geo, shared, past, p)
    return linear(b, out, names.o, names.o_bias), k, v


def _gqa_core(b: GraphBuilder, q: str, k: str, v: str, names: LayerNames, geo: ModelGeometry,
              shared: AttentionInputs, past: tuple[str, str] | None, p: Precision) -> tuple[str, str, str]:
    """com.microsoft.GroupQueryAttention on already-rotated q/k (do_rotary=0): memory linear in the length.

    Past/present are separate [B, kv, past, d] / [B, kv, past+S, d] buffers (no shared buffer), so the cache
    layout and names are those of the standard form; the layer's window becomes local_window_size (q - k < W,
    as transformers), so Qwen2's per-layer windows need no fallback. Softmax runs in float32 inside the op."""
    h, kv, d = geo.num_heads, geo.num_kv_heads, geo.head_dim
    q = b.op("Reshape", q, b.const([0, 0, h * d]), name="gqa/query")
    k = b.op("Reshape", k, b.const([0, 0, kv * d]), name="gqa/key")
    past_k, past_v = past if past is not None else ("", "")
    outputs = [b.fresh_name("gqa/output"), b.fresh_name("key_cache"), b.fresh_name("value_cache")]
    inputs = [q, k, v, past_k, past_v, shared.gqa.seqlens_k, shared.gqa.total_length]
    window = NO_WINDOW if names.window is None else names.window
    out, present_k, present_v = b.op_multi("GroupQueryAttention", inputs, outputs, name="gqa", domain=GQA_DOMAIN,
                                           num_heads=h, kv_num_heads=kv, scale=d ** -0.5,
                                           local_window_size=window, do_rotary=0)
    return out, present_k, present_v


def _standard_core(b: GraphBuilder, q: str, k: str, v: str, names: LayerNames, geo: ModelGeometry,
                   shared: AttentionInputs, past: tuple[str, str] | None, p: Precision) -> tuple[str, str, str]:
    """Plain ONNX ops: float32 scores [B, kv, rep, S, T] (quadratic memory), any runtime, padded batches."""
    h, kv, d = geo.num_heads, geo.num_kv_heads, geo.head_dim
    k = b.op("Transpose", k, perm=[0, 2, 1, 3], name="key")  # [B, kv, S, d]
    v = b.op("Transpose", b.op("Reshape", v, b.const([0, 0, kv, d])), perm=[0, 2, 1, 3], name="value")
    if past is not None:
        k = b.op("Concat", past[0], k, axis=2, name="key_cache")
        v = b.op("Concat", past[1], v, axis=2, name="value_cache")
    # GQA without copying the cache: queries grouped as [B, kv, rep, S, d] broadcast against [B, kv, 1, T, d].
    q5 = b.op("Reshape", b.op("Transpose", q, perm=[0, 2, 1, 3]), b.const([0, kv, h // kv, -1, d]))
    k5 = b.op("Transpose", b.op("Unsqueeze", k, b.const([2])), perm=[0, 1, 2, 4, 3])
    v5 = b.op("Unsqueeze", v, b.const([2]))
    scores = b.op("MatMul", q5, k5, name="scores")
    if not p.is_fp32:
        scores = b.op("Cast", scores, to=TensorProto.FLOAT)
    scores = b.op("Mul", scores, b.const(d ** -0.5, np.float32))
    scores = b.op("Where", shared.allowed[names.window], scores, b.const(MASKED_SCORE, np.float32))
    probs = b.op("Softmax", scores, axis=-1, name="probs")
    if not p.is_fp32:
        probs = b.op("Cast", probs, to=p.elem_type)
    out = b.op("Reshape", b.op("MatMul", probs, v5), b.const([0, h, -1, d]))
    return b.op("Reshape", b.op("Transpose", out, perm=[0, 2, 1, 3]), b.const([0, 0, h * d])), k, v


def decoder_layer(b: GraphBuilder, x: str, names: LayerNames, geo: ModelGeometry, shared: AttentionInputs,
                  past: tuple[str, str] | None, p: Precision) -> tuple[str, str, str]:
    """Pre-norm residual block; returns (hidden, key cache, value cache)."""
    eps = geo.rms_norm_eps
    normed = norm(b, x, names.input_norm, names.input_norm_bias, names.norm, eps, p)
    attn, k, v = attention(b, normed, names, geo, shared, past, p)
    x = b.op("Add", x, attn, name="residual")
    hn = norm(b, x, names.post_norm, names.post_norm_bias, names.norm, eps, p)
    ffn = moe_mlp(b, hn, names.moe, geo, p.elem_type) if names.moe is not None else mlp(b, hn, names, geo)
    x = b.op("Add", x, ffn, name="residual")
    return x, k, v
