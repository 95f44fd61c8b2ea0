"""Routing flips: a MoE token whose expert scores nearly tie may be routed otherwise by a float32 runtime than by
the float64 truth. Its logits then differ by a whole expert's output (measured on the tiny PhiMoE at 4,097 tokens:
one position of 4,097, max |logit diff| 2.55, rel_l2 over the case 3e-3 against a float32 floor of 6e-6), which
is neither a rope error nor a conversion error, and must not fail the case or hide one.

A compared row is a routing flip when the truth's routing margin there (reference_moe.routing_margin: the relative
distance of the nearest routing decision, over every layer) is below the target's rel_l2 limit, a relative error
the target is allowed anyway, while the row itself is off by more than that limit. When such rows alone make a case
fail, they are left out of its metrics and named in the note and in `metrics.routing_flips`. Guards: only under
float32-class limits (looser limits absorb a flip: it costs ~3e-3), and only up to MAX_FLIP_SHARE of the rows; past
that the rows count as they are, since a conversion error moves every row, near-tie or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .metrics import LogitComparison, compare_logits
from .reference_run import TruthLogits
from .tolerances import Tolerance, failures

TIGHT_LIMIT = 1e-3  # flips are recognised under rel_l2 limits up to this (float32-class targets)
MAX_FLIP_SHARE = 0.01  # at most this share of the compared rows (and at least one row) may be flips


@dataclass(frozen=True)
class RoutingFlip:
    position: int
    margin: float  # the truth's routing margin at this position
    relative_l2: float  # the row's own error

    def as_dict(self) -> dict:
        return {"position": self.position, "margin": self.margin, "relative_l2": self.relative_l2}


@dataclass(frozen=True)
class JudgedComparison:
    """The comparison a row is judged by (routing flips left out) and where its largest error is."""

    comparison: LogitComparison
    worst_position: int
    flips: tuple[RoutingFlip, ...] = ()

    def metrics(self) -> dict:
        data = self.comparison.as_dict() | {"worst_position": self.worst_position}
        if self.flips:
            data["routing_flips"] = [f.as_dict() for f in self.flips]
        return data

    @property
    def note(self) -> str:
        if not self.flips:
            return ""
        shown = ", ".join(f"{f.position} (margin {f.margin:.1e}, rel_l2 {f.relative_l2:.2g})" for f in self.flips[:3])
        more = f" and {len(self.flips) - 3} more" if len(self.flips) > 3 else ""
        return (f"routing flip at position {shown}{more}: near-tie expert scores routed otherwise than the float64 "
                "truth; left out of the metrics")


def flip_rows(comparison: LogitComparison, margins: torch.Tensor | None, limit: float) -> list[int]:
    """Rows off by more than `limit` whose truth routing margin is below it; none when too many for flips (or
    every row: nothing would be left to judge)."""
    if margins is None or limit > TIGHT_LIMIT or len(margins) != len(comparison.row_errors):
        return []
    rows = [i for i, (error, margin) in enumerate(zip(comparison.row_errors, margins.tolist()))
            if error > limit and margin < limit]
    return rows if len(rows) <= max(1, MAX_FLIP_SHARE * len(margins)) and len(rows) < len(margins) else []


def _without(reference: torch.Tensor, target: torch.Tensor, rows: list[int]) -> tuple[LogitComparison, list[int]]:
    keep = torch.ones(reference.shape[0], dtype=torch.bool)
    keep[rows] = False
    kept = keep.nonzero().flatten().tolist()
    return compare_logits(reference[keep], target[keep.to(target.device)]), kept


def excluding_routing_flips(comparison: LogitComparison, truth: TruthLogits, target_logits: torch.Tensor,
                            compared: torch.Tensor, tol: Tolerance) -> JudgedComparison:
    """`comparison` of the truth and a target's logits at the `compared` positions, judged without its routing
    flips when they alone make it fail `tol` (otherwise as it is: a row that fails anyway keeps every position)."""
    plain = JudgedComparison(comparison, int(compared[comparison.worst_row]))
    rows = flip_rows(comparison, truth.routing_margin, tol.rel_l2)
    if not rows or not _fails(tol, comparison):
        return plain
    kept_comparison, kept = _without(truth.logits, target_logits, rows)
    if _fails(tol, kept_comparison):
        return plain
    flips = tuple(RoutingFlip(int(compared[r]), float(truth.routing_margin[r]), comparison.row_errors[r])
                  for r in rows)
    return JudgedComparison(kept_comparison, int(compared[kept[kept_comparison.worst_row]]), flips)


def _fails(tol: Tolerance, c: LogitComparison) -> bool:
    return bool(failures(tol, c.relative_l2, c.mean_kl, c.top1_agreement, c.max_abs_diff))


def precision_floor(truth: TruthLogits, float32_twin: TruthLogits) -> LogitComparison:
    """How far the float32 twin is from the truth, its own routing flips left out: the floor measures float32
    arithmetic, and a flipped token would raise every target's limit."""
    comparison = compare_logits(truth.logits, float32_twin.logits)
    rows = flip_rows(comparison, truth.routing_margin, TIGHT_LIMIT)
    if not rows:
        return comparison
    return _without(truth.logits, float32_twin.logits, rows)[0]
