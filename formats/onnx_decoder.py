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

from . import onnx_names as N
from .architectures import Architecture
from .checkpoint import TensorInfo
from .errors import UnsupportedArchitectureError
from .factor_set import FactorSet
from .hf_config import ModelGeometry
from .onnx_graph_builder import ExternalDataWriter, GraphBuilder
from .onnx_layers import PRECISIONS, AttentionInputs, Precision, add_layer_weights, decoder_layer, rms_norm
from .onnx_metadata import GraphFacts, selection_text, spec_metadata
from .onnx_rotary import inv_freq_table, rotary_cos_sin
from .onnx_weights import WeightReader
from .spec import LongRopeSpec

MIN_OPSET = 17
DEFAULT_OPSET = 17
# model_type -> config key that turns on a window transformers applies to some layers only: refused when true.
# Other architectures apply `sliding_window` (when set) on every layer.
SLIDING_WINDOW_SWITCH = {"qwen2": "use_sliding_window"}


@dataclass(frozen=True)
class DecoderGraphOptions:
    dtype: str = "fp32"
    opset: int = DEFAULT_OPSET
    with_past: bool = True
    frozen_factor_set: FactorSet | None = None  # a deliberately wrong graph: one set at every length


@dataclass(frozen=True)
class DecoderSource:
    """Everything read from the checkpoint that the graph needs."""

    arch: Architecture
    geo: ModelGeometry
    spec: LongRopeSpec
    tensors: dict[str, TensorInfo]
    sliding_window: int | None
    config: dict


def sliding_window_for(config: dict, arch: Architecture) -> int | None:
    """The attention window transformers applies for this config, or None for full attention."""
    switch = SLIDING_WINDOW_SWITCH.get(arch.model_type)
    if switch is not None:
        if not config.get(switch, False):
            return None
        # transformers then windows only the layers from max_window_layers on: not expressed here.
        raise UnsupportedArchitectureError(f"{arch.hf_class} with {switch}: true is not supported by export-onnx")
    window = config.get("sliding_window")
    return int(window) if window else None


def build_decoder_graph(source: DecoderSource, options: DecoderGraphOptions,
                        external: ExternalDataWriter | None, version: str) -> onnx.ModelProto:
    """The whole decoder; initializers stream into `external` when given (models over 2 GB)."""
    p = PRECISIONS[options.dtype]
    geo = source.geo
    b = GraphBuilder(options.opset, external)
    ids = b.add_input(N.INPUT_IDS, TensorProto.INT64, [N.BATCH, N.SEQUENCE])
    mask = b.add_input(N.ATTENTION_MASK, TensorProto.INT64, [N.BATCH, N.TOTAL_SEQUENCE])
    positions = b.add_input(N.POSITION_IDS, TensorProto.INT64, [N.BATCH, N.SEQUENCE])
    pasts = _past_inputs(b, geo, p) if options.with_past else [None] * geo.num_layers

    past_len = _dim(b, pasts[0][0], 2) if options.with_past else b.const(0)
    total = b.op("Add", past_len, _dim(b, ids, 1), name="total_length")
    inv_freq = inv_freq_table(b, source.spec, total, options.frozen_factor_set)
    cos, sin = rotary_cos_sin(b, source.spec, positions, inv_freq, p.elem_type)
    shared = AttentionInputs(cos, sin, _allowed_mask(b, mask, past_len, total, source.sliding_window))

    reader = WeightReader(source.tensors, source.arch, geo)
    x = b.op("Gather", _weight(b, "model.embed_tokens.weight", reader.embedding(), p.np_dtype), ids)
    presents = []
    for i in tqdm(range(geo.num_layers), desc="layers", unit="layer", disable=None, leave=False):
        x, k, v = decoder_layer(b, x, add_layer_weights(b, i, reader.layer(i), p), geo, shared, pasts[i], p)
        presents += [(k, N.present_key(i)), (v, N.present_value(i))]
    x = rms_norm(b, x, _weight(b, "model.norm.weight", reader.final_norm(), np.float32), geo.rms_norm_eps, p)
    logits = b.op("MatMul", x, _weight(b, "lm_head.MatMul.weight", reader.lm_head(), p.np_dtype))
    _output(b, logits, N.LOGITS, p.elem_type, [N.BATCH, N.SEQUENCE, geo.vocab_size])
    if options.with_past:  # Optimum order: logits, then present.{i}.key/value
        for value, name in presents:
            _output(b, value, name, p.elem_type, [N.BATCH, geo.num_kv_heads, N.TOTAL_SEQUENCE, geo.head_dim])

    facts = GraphFacts(source.arch.hf_class, geo.num_layers, options.dtype, selection_text(options.frozen_factor_set))
    return b.model("longrope_decoder", spec_metadata(source.spec, facts), "longrope-convert", version)


def _weight(b: GraphBuilder, name: str, array: np.ndarray, dtype) -> str:
    return b.initializer(name, np.ascontiguousarray(array, dtype=dtype))


def _past_inputs(b: GraphBuilder, geo: ModelGeometry, p: Precision) -> list[tuple[str, str]]:
    shape = [N.BATCH, geo.num_kv_heads, N.PAST_SEQUENCE, geo.head_dim]
    return [(b.add_input(N.past_key(i), p.elem_type, shape), b.add_input(N.past_value(i), p.elem_type, shape))
            for i in range(geo.num_layers)]


def _dim(b: GraphBuilder, x: str, axis: int) -> str:
    """One dimension of x as an int64 scalar."""
    return b.op("Squeeze", b.op("Shape", x, start=axis, end=axis + 1), b.const([0]))


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
