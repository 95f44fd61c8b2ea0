"""Where a config.json keeps its rope settings: `rope_parameters` (5.x) or `rope_scaling`, theta and L_orig.

Every number read here is checked: a string, a list or a boolean where a number belongs is a ConfigError naming
config.json and the key (exit 2), never a float()/int() crash.
"""

from __future__ import annotations

import math

from ..errors import ConfigError

LONGROPE_TYPES = ("longrope", "su")  # "su" is the legacy name of the same scheme
DEFAULT_ROPE_THETA = 10000.0
# Context lengths beyond this are corrupt configs (the longest released context is ~10M tokens).
MAX_POSITIONS = 1 << 31


def rope_dict(config: dict) -> dict | None:
    """The rope scaling dict, whichever name it is stored under (5.x `rope_parameters` first)."""
    for key in ("rope_parameters", "rope_scaling"):
        value = config.get(key)
        if isinstance(value, dict) and rope_type(value) is not None:
            return value
    return None


def rope_type(d: dict) -> str | None:
    return d.get("rope_type") or d.get("type")


def rope_theta(config: dict, source: str = "config.json") -> float:
    """rope_theta at top level or in `rope_parameters` (default 10000); must be a finite number > 0."""
    rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    key, value = "rope_theta", config.get("rope_theta")
    if not value:  # absent, null or 0: the next place, as transformers reads it
        key, value = "rope_parameters.rope_theta", rope.get("rope_theta")
    if not value:
        return DEFAULT_ROPE_THETA
    if not _is_number(value) or not value > 0:
        raise ConfigError(f"'{key}' must be a finite number > 0, got {_shown(value)}", source)
    return float(value)


def original_max_positions(config: dict, source: str = "config.json") -> int | None:
    """L_orig: top level (Phi-3, LongRoPE2, our writer) or inside the rope dict."""
    rope = rope_dict(config) or {}
    key, value = "original_max_position_embeddings", config.get("original_max_position_embeddings")
    if value is None:
        key, value = "rope_scaling.original_max_position_embeddings", rope.get("original_max_position_embeddings")
    return positions(value, key, source)


def max_positions(config: dict, source: str = "config.json") -> int | None:
    """max_position_embeddings, checked; None when absent."""
    return positions(config.get("max_position_embeddings"), "max_position_embeddings", source)


def positions(value, key: str, source: str) -> int | None:
    """A context length: None when absent (or 0, as configs write 'unset'), else an integer in 1..2^31.
    An integral float (4096.0, as some exporters write) is accepted; 1e9-style huge or fractional ones are not."""
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    integral = _is_number(value) and float(value).is_integer()
    if not integral or not 0 < value <= MAX_POSITIONS:
        raise ConfigError(f"'{key}' must be a positive integer (at most {MAX_POSITIONS}), got {_shown(value)}",
                          source)
    return int(value)


def check_rope_numbers(config: dict, source: str = "config.json") -> None:
    """Every rope number a command reads from config.json, checked up front so later int()/float() calls cannot
    fail: theta, both context lengths, and the rope dict's factor/attention_factor."""
    rope_theta(config, source)
    original_max_positions(config, source)
    max_positions(config, source)
    rope = rope_dict(config) or {}
    for key in ("factor", "attention_factor"):
        value = rope.get(key)
        if value is not None and (not _is_number(value) or not value > 0):
            raise ConfigError(f"'rope_scaling.{key}' must be a finite number > 0, got {_shown(value)}", source)


def _is_number(value) -> bool:
    """A finite int or float (not a bool); an int too large for a float (10**400) is not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _shown(value) -> str:
    """A config value as a short repr for a one-line message (a hostile config may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
