"""Recognise a LongRoPE2-shaped long factor set: below the critical dimension d_c the factors follow the closed
form a^(i/d_c) (i = 0 .. d_c-1), above it they are searched.

Published sets (FACTS.md): LLaMA3-8B 8192 -> 131072 follows 21.81^(i/33) for its first 33 dims; Phi-4-mini follows
32.03^(i/31) for its first 31. LongRoPE v1 sets are not of this shape (a run of exact 1.0s is plain RoPE, a = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REL_TOLERANCE = 1e-3  # published factors are rounded (a to 4 digits); the closed form holds to ~1e-5 on them
MIN_CRITICAL_DIM = 4  # fewer points fit any two-parameter curve
MIN_SCALE = 1.5  # a ~ 1 is a prefix of plain RoPE dims (LongRoPE v1 keeps its high frequencies at exactly 1.0)


@dataclass(frozen=True)
class LongRope2Fit:
    """The closed-form prefix of a factor set: factors[i] ~ scale^(i/critical_dim) for i < critical_dim."""

    critical_dim: int
    scale: float
    max_rel_error: float

    def describe(self) -> str:
        return (f"LongRoPE2 shape: the first {self.critical_dim} factors follow {self.scale:.6g}^(i/{self.critical_dim})"
                f" (critical dimension {self.critical_dim}, implied scale {self.scale:.6g}, max relative error "
                f"{self.max_rel_error:.1e}); dims >= {self.critical_dim} are searched")


def fit_longrope2(factors: tuple[float, ...] | list[float], rel_tolerance: float = REL_TOLERANCE) -> LongRope2Fit | None:
    """The largest d_c (with searched dims after it) whose prefix fits a^(i/d_c) within `rel_tolerance`, with
    a fitted from the data; None when the set has no such prefix (or it is plain RoPE, a < MIN_SCALE)."""
    values = [float(v) for v in factors]
    if len(values) <= MIN_CRITICAL_DIM or any(not (math.isfinite(v) and v > 0) for v in values):
        return None
    if abs(values[0] - 1.0) > rel_tolerance:  # a^0 = 1: the highest frequency is never rescaled
        return None
    best = None
    for d_c in range(MIN_CRITICAL_DIM, len(values) + 1):
        fit = _fit_prefix(values, d_c)
        if fit.max_rel_error <= rel_tolerance:
            best = fit
    # A closed form over every dim is NTK-like scaling with nothing searched; a ~ 1 is plain RoPE.
    if best is None or best.critical_dim == len(values) or best.scale < MIN_SCALE:
        return None
    return best


def _fit_prefix(values: list[float], d_c: int) -> LongRope2Fit:
    """Least squares in log space through the origin: ln f_i = (i/d_c) ln a, i < d_c; errors are relative."""
    logs = [math.log(v) for v in values[:d_c]]
    slope = sum(i * y for i, y in enumerate(logs)) / sum(i * i for i in range(d_c))
    error = max(abs(math.exp(y - slope * i) - 1.0) for i, y in enumerate(logs))
    return LongRope2Fit(critical_dim=d_c, scale=math.exp(slope * d_c), max_rel_error=error)


def closed_form_prefix(scale: float, critical_dim: int) -> list[float]:
    """scale^(i/critical_dim) for i < critical_dim: the shape fit_longrope2 recognises."""
    return [scale ** (i / critical_dim) for i in range(critical_dim)]
