"""Sparse MoE MLP of the reference decoder: PhiMoE's sparsemixer routing (inference form) and the rules runtimes use.

Written from transformers' `sparsemixer` (models/phimoe/modeling_phimoe.py, 4.57 and 5.x alike with
training=False), not imported from it. docs/phimoe.md records the math and where each runtime departs from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats.architectures import Role


def _masked_softmax_at(scores: torch.Tensor, ref: torch.Tensor, pick: torch.Tensor, eps: float) -> torch.Tensor:
    """softmax over the experts within 2*eps (relative) of `ref`, read at `pick`: sparsemixer's multiplier.

    An expert j is dropped when (ref - s_j) / max(|s_j|, ref) > 2*eps, so with well separated logits only the
    picked expert survives and its multiplier is exactly 1 (the weights are not renormalised to sum to 1)."""
    factor = scores.abs().clamp(min=ref)
    dropped = ((ref - scores) / factor) > (2 * eps)
    return torch.softmax(scores.masked_fill(dropped, float("-inf")), dim=-1).gather(-1, pick)


def sparsemixer_top2(scores: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, experts) [tokens, 2]: the top expert, then the best of the rest, each with its masked-softmax
    multiplier. The second mask's threshold is the second-best score but its softmax runs over the scores with
    the first expert removed (as transformers computes it)."""
    top1_score, top1 = scores.max(dim=-1, keepdim=True)
    w1 = _masked_softmax_at(scores, top1_score, top1, eps)
    rest = scores.scatter(-1, top1, float("-inf"))
    top2_score, top2 = rest.max(dim=-1, keepdim=True)
    factor = scores.abs().clamp(min=top2_score)
    dropped = ((top2_score - scores) / factor) > (2 * eps)
    w2 = torch.softmax(rest.masked_fill(dropped, float("-inf")), dim=-1).gather(-1, top2)
    return torch.cat((w1, w2), dim=-1), torch.cat((top1, top2), dim=-1)


def softmax_topk_renormalised(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's phimoe routing (build_moe_ffn, softmax gating, norm_w): softmax over all experts, top-k,
    weights divided by their sum."""
    probs = torch.softmax(scores, dim=-1)
    weights, experts = probs.topk(k, dim=-1)
    return weights / weights.sum(-1, keepdim=True), experts


def route(rule: str, scores: torch.Tensor, k: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing weights and expert indices [tokens, k] by rule name (ROUTING_RULES)."""
    if rule == "sparsemixer":
        if k != 2:
            raise ValueError(f"sparsemixer routes exactly 2 experts per token, config asks {k}")
        return sparsemixer_top2(scores, eps)
    return softmax_topk_renormalised(scores, k)


ROUTING_RULES = ("sparsemixer", "softmax_topk")


def moe_mlp(x: torch.Tensor, router: torch.Tensor, experts: list[dict[Role, torch.Tensor]], k: int, eps: float,
            rule: str = "sparsemixer") -> torch.Tensor:
    """sum_k weight_k * down_e(silu(gate_e(x)) * up_e(x)) over each token's routed experts; every expert runs
    densely on all tokens (exact, and simple enough for the small models a reference checks)."""
    flat = x.reshape(-1, x.shape[-1])
    weights, chosen = route(rule, flat @ router.T, k, eps)
    out = torch.zeros_like(flat)
    for e, w in enumerate(experts):
        mix = (weights * (chosen == e)).sum(-1, keepdim=True)  # this expert's weight per token (0: not routed)
        if not bool(mix.any()):
            continue
        act = F.silu(flat @ w[Role.EXPERT_GATE].T) * (flat @ w[Role.EXPERT_UP].T)
        out = out + mix * (act @ w[Role.EXPERT_DOWN].T)
    return out.reshape(x.shape)
