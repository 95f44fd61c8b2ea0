"""Sparse MoE MLP of the reference decoder: PhiMoE's sparsemixer routing (inference form) and the rules runtimes use.

Written from transformers' `sparsemixer` (models/phimoe/modeling_phimoe.py, 4.57 and 5.x alike with
training=False), not imported from it. docs/phimoe.md records the math and where each runtime departs from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats.architectures import Role


def _jitter_ratio(scores: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(ref - s_j) / max(|s_j|, ref) per expert: sparsemixer drops expert j from ref's softmax when this exceeds
    2*eps."""
    return (ref - scores) / scores.abs().clamp(min=ref)


def _masked_softmax_at(scores: torch.Tensor, ref: torch.Tensor, pick: torch.Tensor, eps: float,
                       softmax_over: torch.Tensor | None = None) -> torch.Tensor:
    """softmax over the experts within 2*eps (relative) of `ref`, read at `pick`: sparsemixer's multiplier. The mask
    comes from `scores`; the softmax runs over `softmax_over` (default: `scores`).

    With well separated logits only the picked expert survives and its multiplier is exactly 1 (the weights are
    not renormalised to sum to 1)."""
    dropped = _jitter_ratio(scores, ref) > (2 * eps)
    over = scores if softmax_over is None else softmax_over
    return torch.softmax(over.masked_fill(dropped, float("-inf")), dim=-1).gather(-1, pick)


def sparsemixer_top2(scores: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, experts) [tokens, 2]: the top expert, then the best of the rest, each with its masked-softmax
    multiplier. The second mask's threshold is the second-best score but its softmax runs over the scores with
    the first expert removed (as transformers computes it)."""
    top1_score, top1 = scores.max(dim=-1, keepdim=True)
    w1 = _masked_softmax_at(scores, top1_score, top1, eps)
    rest = scores.scatter(-1, top1, float("-inf"))
    top2_score, top2 = rest.max(dim=-1, keepdim=True)
    w2 = _masked_softmax_at(scores, top2_score, top2, eps, softmax_over=rest)
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


def routing_margin(rule: str, scores: torch.Tensor, k: int, eps: float) -> torch.Tensor:
    """[tokens]: how close each token's routing is to a discrete change, as a relative distance (0: a tie).

    Every rule picks the top k by score: the gaps between consecutive ranks down to rank k+1, over the token's
    largest |score|. sparsemixer also drops an expert when (ref - s_j) / max(|s_j|, ref) > 2*eps, with ref the
    first then the second score: the distance of that ratio from 2*eps. A runtime whose scores are off by a
    relative d can route a token with a margin below ~d otherwise than the truth (a routing flip, docs/phimoe.md)."""
    ranked = scores.sort(dim=-1, descending=True).values
    scale = scores.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    margin = ((ranked[:, :k] - ranked[:, 1:k + 1]) / scale).amin(-1)
    if rule != "sparsemixer":
        return margin
    for ref in (ranked[:, :1], ranked[:, 1:2]):
        distance = (_jitter_ratio(scores, ref) - 2 * eps).abs()
        distance = distance.masked_fill(scores >= ref, float("inf"))  # ref and above: never dropped
        margin = torch.minimum(margin, distance.amin(-1))
    return margin


def moe_mlp(x: torch.Tensor, router: torch.Tensor, experts: list[dict[Role, torch.Tensor]], k: int, eps: float,
            rule: str = "sparsemixer") -> tuple[torch.Tensor, torch.Tensor]:
    """sum_k weight_k * down_e(silu(gate_e(x)) * up_e(x)) over each token's routed experts, and each token's
    routing_margin [B, T]; each expert runs on the tokens routed to it only."""
    flat = x.reshape(-1, x.shape[-1])
    scores = flat @ router.T
    weights, chosen = route(rule, scores, k, eps)
    out = torch.zeros_like(flat)
    for e, w in enumerate(experts):
        tokens, slot = (chosen == e).nonzero(as_tuple=True)
        if not len(tokens):
            continue
        routed = flat[tokens]
        act = F.silu(routed @ w[Role.EXPERT_GATE].T) * (routed @ w[Role.EXPERT_UP].T)
        out.index_add_(0, tokens, weights[tokens, slot, None] * (act @ w[Role.EXPERT_DOWN].T))
    return out.reshape(x.shape), routing_margin(rule, scores, k, eps).reshape(x.shape[:-1])
