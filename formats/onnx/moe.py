"""PhiMoE's sparse MoE MLP as standard ONNX ops: sparsemixer top-2 routing, every expert computed densely.

Routing follows verify/reference_moe.py (transformers' `sparsemixer` at inference): the top expert and the best
of the rest, each weighted by a softmax over the experts within 2*jitter_eps (relative) of it. All experts run
on every token ([B, S, E, ...] by broadcasting MatMul) and are summed with a [B, S, E] mix that is zero for the
experts a token is not routed to: E times the MLP work, which is fine for the small models verify checks and keeps
the graph free of data-dependent shapes. Routing runs in float32 whatever the model dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto

from ..architectures import Role
from ..hf.geometry import ModelGeometry
from ..hf.weights import LayerWeights
from .graph_builder import GraphBuilder

NEG_INF = float("-inf")


@dataclass(frozen=True)
class MoeNames:
    """Initializer names of one MoE MLP: router [H, E], experts' gate+up [E, H, 2I] and down [E, I, H]."""

    router: str
    gate_up: str
    down: str
    jitter_eps: float


def add_moe_weights(b: GraphBuilder, prefix: str, w: LayerWeights, jitter_eps: float, np_dtype) -> MoeNames:
    """Stack the experts as batched MatMul operands ([in, out] per expert)."""
    gate_up = np.stack([np.concatenate([e[Role.EXPERT_GATE], e[Role.EXPERT_UP]]).T for e in w.experts])
    down = np.stack([e[Role.EXPERT_DOWN].T for e in w.experts])

    def put(name: str, array, dtype=np_dtype) -> str:
        return b.initializer(f"{prefix}.{name}", np.ascontiguousarray(array, dtype=dtype))

    return MoeNames(router=put("moe.router.MatMul.weight", w.router.T, np.float32),
                    gate_up=put("moe.experts.gate_up.MatMul.weight", gate_up),
                    down=put("moe.experts.down.MatMul.weight", down), jitter_eps=jitter_eps)


def _masked_softmax_at(b: GraphBuilder, scores: str, candidates: str, ref: str, pick: str, eps: float) -> str:
    """softmax of `candidates` with experts farther than 2*eps (relative to `ref`, per sparsemixer) from `ref`
    dropped, read at index `pick` [B, S, 1]."""
    factor = b.op("Max", b.op("Abs", scores), ref)
    dropped = b.op("Greater", b.op("Div", b.op("Sub", ref, scores), factor), b.const(2 * eps, np.float32))
    masked = b.op("Where", dropped, b.const(NEG_INF, np.float32), candidates)
    return b.op("GatherElements", b.op("Softmax", masked, axis=-1), pick, axis=-1, name="moe/weight")


def sparsemixer_mix(b: GraphBuilder, scores: str, num_experts: int, eps: float) -> str:
    """[B, S, E] float32: each token's weight per expert (its two routed experts nonzero)."""
    experts = b.const(np.arange(num_experts))
    top1_score, top1 = b.op("TopK", scores, b.const([1]), axis=-1, outputs=2, name="moe/top1")
    w1 = _masked_softmax_at(b, scores, scores, top1_score, top1, eps)
    is_top1 = b.op("Equal", top1, experts)
    rest = b.op("Where", is_top1, b.const(NEG_INF, np.float32), scores)
    top2_score, top2 = b.op("TopK", rest, b.const([1]), axis=-1, outputs=2, name="moe/top2")
    w2 = _masked_softmax_at(b, scores, rest, top2_score, top2, eps)
    zero = b.const(0.0, np.float32)
    first = b.op("Where", is_top1, w1, zero)
    second = b.op("Where", b.op("Equal", top2, experts), w2, zero)
    return b.op("Add", first, second, name="moe/mix")


def moe_mlp(b: GraphBuilder, x: str, names: MoeNames, geo: ModelGeometry, elem_type: int) -> str:
    """sum_e mix[e] * down_e(silu(gate_e(x)) * up_e(x)) for x [B, S, H]."""
    inter = geo.intermediate_size
    x32 = x if elem_type == TensorProto.FLOAT else b.op("Cast", x, to=TensorProto.FLOAT)
    mix = sparsemixer_mix(b, b.op("MatMul", x32, names.router, name="moe/router"), geo.num_experts,
                          names.jitter_eps)
    if elem_type != TensorProto.FLOAT:
        mix = b.op("Cast", mix, to=elem_type)
    xe = b.op("Unsqueeze", x, b.const([2, 3]))  # [B, S, 1, 1, H] against [E, H, 2I] -> [B, S, E, 1, 2I]
    gate, up = b.op("Split", b.op("MatMul", xe, names.gate_up), b.const([inter, inter]), axis=-1, outputs=2)
    act = b.op("Mul", b.op("Mul", gate, b.op("Sigmoid", gate)), up, name="moe/silu")
    out = b.op("Squeeze", b.op("MatMul", act, names.down), b.const([3]))  # [B, S, E, H]
    weighted = b.op("Mul", out, b.op("Unsqueeze", mix, b.const([-1])))
    return b.op("ReduceSum", weighted, b.const([2]), keepdims=0, name="moe/out")
