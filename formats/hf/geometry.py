"""A model's shapes, derived from config.json the way transformers derives them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..spec import rotary_dim_for
from .rope_keys import rope_dict


@dataclass(frozen=True)
class ModelGeometry:
    """The shapes a decoder needs, derived from config.json the way transformers derives them."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    partial_rotary_factor: float
    tie_word_embeddings: bool
    num_experts: int = 0  # sparse MoE MLP (PhiMoE's num_local_experts); 0: a dense MLP
    experts_per_token: int = 0  # num_experts_per_tok (top-k routing)
    router_jitter_eps: float = 0.0  # PhiMoE's sparsemixer eps (router_jitter_noise; transformers' default 0.01)

    def kv_cache_bytes(self, tokens: int, itemsize: int) -> int:
        """Keys and values of every layer for `tokens` positions at `itemsize` bytes a value."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * tokens * itemsize

    @property
    def rotary_dim(self) -> int:
        return rotary_dim_for(self.head_dim, self.partial_rotary_factor)

    @property
    def rotary_dim_derivation(self) -> str:
        text = f"head_dim {self.head_dim}"
        if self.partial_rotary_factor != 1.0:
            text += f" x partial_rotary_factor {self.partial_rotary_factor}"
        return f"rotary dim {self.rotary_dim} from {text}"


def geometry(config: dict, source: str = "config.json") -> ModelGeometry:
    """Read the model's shapes; missing, non-numeric or inconsistent values give a ConfigError naming the key."""
    hidden = _int(config, "hidden_size", source)
    heads = _int(config, "num_attention_heads", source)
    kv_heads = _int(config, "num_key_value_heads", source, default=heads)
    if heads % kv_heads:
        raise ConfigError(f"'num_key_value_heads' ({kv_heads}) must divide 'num_attention_heads' ({heads})", source)
    head_dim = _int(config, "head_dim", source, default=hidden // heads or None)
    rope = rope_dict(config) or {}
    partial = _number(config, "partial_rotary_factor", source, rope.get("partial_rotary_factor", 1.0))
    if not 0 < partial <= 1 or rotary_dim_for(head_dim, partial) < 2:
        raise ConfigError(f"'partial_rotary_factor' must be in (0, 1] and leave a rotary dim >= 2, got {partial}",
                          source)
    return ModelGeometry(
        hidden_size=hidden,
        num_layers=_int(config, "num_hidden_layers", source),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=_int(config, "intermediate_size", source),
        vocab_size=_int(config, "vocab_size", source),
        rms_norm_eps=_number(config, "rms_norm_eps", source, 1e-6),
        partial_rotary_factor=partial,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        **_experts(config, source),
    )


def _experts(config: dict, source: str) -> dict[str, int | float]:
    """Expert counts and router eps of a sparse MoE config (num_local_experts / num_experts_per_tok /
    router_jitter_noise); none for a dense one."""
    if config.get("num_local_experts") is None:
        return {}
    experts = _int(config, "num_local_experts", source)
    per_token = _int(config, "num_experts_per_tok", source, default=2)
    if per_token > experts:
        raise ConfigError(f"'num_experts_per_tok' ({per_token}) exceeds 'num_local_experts' ({experts})", source)
    eps = _number(config, "router_jitter_noise", source, 0.01)
    return {"num_experts": experts, "experts_per_token": per_token, "router_jitter_eps": eps}


MAX_DIMENSION = 1 << 24  # no real model has a dimension (or layer count) near this; larger is a corrupt config


def _int(config: dict, key: str, source: str, default: int | None = None) -> int:
    value = config.get(key)
    if value is None and default is not None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_DIMENSION:
        raise ConfigError(f"'{key}' must be a positive integer (at most {MAX_DIMENSION}), got {value!r}", source)
    return value


def _number(config: dict, key: str, source: str, default: float) -> float:
    value = config.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"'{key}' must be a finite number, got {value!r}", source)
    return float(value)
