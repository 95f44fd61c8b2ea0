"""Where a config.json keeps its rope settings: `rope_parameters` (5.x) or `rope_scaling`, theta and L_orig."""

from __future__ import annotations

LONGROPE_TYPES = ("longrope", "su")  # "su" is the legacy name of the same scheme
DEFAULT_ROPE_THETA = 10000.0


def rope_dict(config: dict) -> dict | None:
    """The rope scaling dict, whichever name it is stored under (5.x `rope_parameters` first)."""
    for key in ("rope_parameters", "rope_scaling"):
        value = config.get(key)
        if isinstance(value, dict) and rope_type(value) is not None:
            return value
    return None


def rope_type(d: dict) -> str | None:
    return d.get("rope_type") or d.get("type")


def rope_theta(config: dict) -> float:
    rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    return float(config.get("rope_theta") or rope.get("rope_theta") or DEFAULT_ROPE_THETA)


def original_max_positions(config: dict) -> int | None:
    """L_orig: top level (Phi-3, LongRoPE2, our writer) or inside the rope dict."""
    rope = rope_dict(config) or {}
    value = config.get("original_max_position_embeddings") or rope.get("original_max_position_embeddings")
    return int(value) if value else None
