"""Assemble a whole LongRoPE decoder as one ONNX graph from safetensors weights (no tracing).

Inputs/outputs follow the Optimum / onnxruntime-genai convention (see onnx_names). The factor set is chosen
inside the graph from shapes (past + current length > L_orig), so one graph serves every length and the choice
never depends on an example input or on the installed transformers version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto
from tqdm import tqdm

from ..factor_set import FactorSet
from ..hf.checkpoint import Checkpoint
from ..hf.geometry import ModelGeometry
from ..hf.weights import WeightReader
from ..spec_inputs import with_start_tokens
from . import names as N
from .attention_forms import ATTENTION_FORMS, DEFAULT_ATTENTION, GQA
from .graph_builder import ExternalDataWriter, GraphBuilder
from .layers import PRECISIONS, AttentionInputs, GqaLengths, Precision, add_layer_weights, decoder_layer, norm
from .metadata import GraphFacts, selection_text, spec_metadata
from .rotary import inv_freq_table, rotary_cos_sin

MIN_OPSET = 17
DEFAULT_OPSET = 17
INT4 = "int4"  # an fp32 graph whose MatMul weights are then quantized to MatMulNBits (convert/export_onnx.py)
# export dtype -> the precision the graph is built in (activations, KV cache, unquantized weights)
GRAPH_PRECISION = {"fp32": "fp32", "fp16": "fp16", INT4: "fp32"}
EXPORT_DTYPES = tuple(GRAPH_PRECISION)


@dataclass(frozen=True)
class DecoderGraphOptions:
    dtype: str = "fp32"
    opset: int = DEFAULT_OPSET
    with_past: bool = True
    frozen_factor_set: FactorSet | None = None  # a deliberately wrong graph: one set at every length
    start_tokens: int = 0  # LongRoPE v1 n_hat: positions below it keep plain RoPE (no config can carry it)
    attention: str = DEFAULT_ATTENTION  # attention_forms.GQA (fused contrib op) or STANDARD (plain ops)


def build_decoder_graph(checkpoint: Checkpoint, options: DecoderGraphOptions,
                        external: ExternalDataWriter | None, version: str) -> onnx.ModelProto:
    """The whole decoder; initializers stream into `external` when given (models over 2 GB)."""
    if options.attention not in ATTENTION_FORMS:
        raise ValueError(f"unknown attention form {options.attention!r}")
    p = PRECISIONS[GRAPH_PRECISION[options.dtype]]
    geo, spec = checkpoint.geometry, with_start_tokens(checkpoint.require_spec(), options.start_tokens or None)
    b = GraphBuilder(options.opset, external)
    ids = b.add_input(N.INPUT_IDS, TensorProto.INT64, [N.BATCH, N.SEQUENCE])
    mask = b.add_input(N.ATTENTION_MASK, TensorProto.INT64, [N.BATCH, N.TOTAL_SEQUENCE])
    positions = b.add_input(N.POSITION_IDS, TensorProto.INT64, [N.BATCH, N.SEQUENCE])
    pasts = _past_inputs(b, geo, p) if options.with_past else [None] * geo.num_layers

    past_len = _dim(b, pasts[0][0], 2) if options.with_past else b.const(0)
    total = b.op("Add", past_len, _dim(b, ids, 1), name="total_length")
    inv_freq = inv_freq_table(b, spec, total, options.frozen_factor_set)
    cos, sin = rotary_cos_sin(b, spec, positions, inv_freq, p.elem_type)
    if options.attention == GQA:  # no [S, T] mask at all: the op takes lengths and each layer's window
        shared = AttentionInputs(cos, sin, {}, _gqa_lengths(b, mask))
    else:
        masks = {w: _allowed_mask(b, mask, past_len, total, w) for w in sorted(set(checkpoint.windows), key=str)}
        shared = AttentionInputs(cos, sin, masks)

    reader = WeightReader(checkpoint)
    x = b.op("Gather", _weight(b, "embed.weight", reader.embedding(), p.np_dtype), ids)
    presents = []
    for i in tqdm(range(geo.num_layers), desc="layers", unit="layer", disable=None, leave=False):
        names = add_layer_weights(b, i, reader.layer(i), checkpoint.windows[i], p, checkpoint.arch.norm,
                                  geo.router_jitter_eps)
        x, k, v = decoder_layer(b, x, names, geo, shared, pasts[i], p)
        presents += [(k, N.present_key(i)), (v, N.present_value(i))]
    final_bias, head_bias = reader.final_norm_bias(), reader.lm_head_bias()  # LayerNorm architectures (PhiMoE)
    x = norm(b, x, _weight(b, "final_norm.weight", reader.final_norm(), np.float32),
             None if final_bias is None else _weight(b, "final_norm.bias", final_bias, np.float32),
             checkpoint.arch.norm, geo.rms_norm_eps, p)
    logits = b.op("MatMul", x, _weight(b, "output.MatMul.weight", reader.lm_head().T, p.np_dtype))
    if head_bias is not None:
        logits = b.op("Add", logits, _weight(b, "output.bias", head_bias, p.np_dtype))
    _output(b, logits, N.LOGITS, p.elem_type, [N.BATCH, N.SEQUENCE, geo.vocab_size])
    if options.with_past:  # Optimum order: logits, then present.{i}.key/value
        for value, name in presents:
            _output(b, value, name, p.elem_type, [N.BATCH, geo.num_kv_heads, N.TOTAL_SEQUENCE, geo.head_dim])

    facts = GraphFacts(checkpoint.arch.hf_class, geo.num_layers, options.dtype,
                       selection_text(options.frozen_factor_set), options.attention)
    return b.model("longrope_decoder", spec_metadata(spec, facts), "longrope-convert", version)


def _weight(b: GraphBuilder, name: str, array: np.ndarray, dtype) -> str:
    return b.initializer(name, np.ascontiguousarray(array, dtype=dtype))


def _past_inputs(b: GraphBuilder, geo: ModelGeometry, p: Precision) -> list[tuple[str, str]]:
    shape = [N.BATCH, geo.num_kv_heads, N.PAST_SEQUENCE, geo.head_dim]
    return [(b.add_input(N.past_key(i), p.elem_type, shape), b.add_input(N.past_value(i), p.elem_type, shape))
            for i in range(geo.num_layers)]


def _dim(b: GraphBuilder, x: str, axis: int) -> str:
    """One dimension of x as an int64 scalar."""
    return b.op("Squeeze", b.op("Shape", x, start=axis, end=axis + 1), b.const([0]))


def _gqa_lengths(b: GraphBuilder, mask: str) -> GqaLengths:
    """seqlens_k = attended tokens per row - 1 and total = mask width, int32, as onnxruntime-genai's builder
    feeds GroupQueryAttention (the op counts tokens from the left: right padding only, never left padding)."""
    attended = b.op("ReduceSum", mask, b.const([1]), keepdims=0, name="gqa/attended")
    seqlens_k = b.op("Cast", b.op("Sub", attended, b.const(1)), to=TensorProto.INT32, name="gqa/seqlens_k")
    width = b.op("Squeeze", b.op("Shape", mask, start=1, end=2), b.const([0]))
    return GqaLengths(seqlens_k, b.op("Cast", width, to=TensorProto.INT32, name="gqa/total_sequence_length"))


def _allowed_mask(b: GraphBuilder, mask: str, past_len: str, total: str, window: int | None) -> str:
    """bool [batch, 1, 1, seq, total]: key position <= query position (within the window) and not padding."""
    one = b.const(1)
    q_pos = b.op("Unsqueeze", b.op("Range", past_len, total, one), b.const([1]), name="query_positions")
    k_pos = b.op("Unsqueeze", b.op("Range", b.const(0), total, one), b.const([0]), name="key_positions")
    allowed = b.op("LessOrEqual", k_pos, q_pos, name="causal")
    if window is not None:
        allowed = b.op("And", allowed, b.op("Less", b.op("Sub", q_pos, k_pos), b.const(window)), name="window")
    padding = b.op("Unsqueeze", b.op("Cast", mask, to=TensorProto.BOOL), b.const([1, 2, 3]), name="not_padding")
    return b.op("And", allowed, padding, name="allowed")


def _output(b: GraphBuilder, value: str, name: str, elem_type: int, shape: list) -> None:
    b.op_to("Identity", [value], name)
    b.add_output(name, elem_type, shape)
