"""Bundled example factors for the demo and tests: shaped like searched LongRoPE sets, seeded."""

from __future__ import annotations

import random


def example_long_factors(rotary_dim: int, scale: float, seed: int = 0) -> tuple[float, ...]:
    """Rising from ~1 (fast dims, kept) to the nominal scale (slow dims, interpolated), with search-like jitter."""
    rng = random.Random(seed)
    half = rotary_dim // 2
    values = []
    for i in range(half):
        t = i / max(half - 1, 1)
        base = 1.0 + (scale - 1.0) * t**2
        values.append(round(min(base * (1.0 + 0.05 * rng.random()), scale), 6))
    return tuple(values)


def example_short_factors(rotary_dim: int, seed: int = 0) -> tuple[float, ...]:
    """Close to 1 with a gentle rise, as LongRoPE's short sets are."""
    rng = random.Random(seed + 1)
    half = rotary_dim // 2
    return tuple(round(1.0 + 0.3 * (i / max(half - 1, 1)) ** 3 + 0.02 * rng.random(), 6) for i in range(half))
