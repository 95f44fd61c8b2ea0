"""HF config.json: reading a LongRoPE spec, and writing one that loads alike in 4.x and 5.x.

Layout rules (FACTS.md, checked on transformers 4.51/4.57/5.23):
- LLaMA/Mistral/Qwen2: rope_scaling {rope_type, type, short_factor, long_factor, original_max_position_embeddings,
  factor (+attention_factor)} plus top-level rope_theta, original_max_position_embeddings, max_position_embeddings,
  head_dim. 4.x reads only the top-level L_orig; Mistral on 4.x crashes without head_dim.
- Phi-3: rope_scaling exactly {type, short_factor, long_factor}; 4.x rejects other keys.
- PhiMoE: rope_scaling {type, short_factor, long_factor, short_mscale, long_mscale, original_max_position_embeddings}
  (4.x raises without numeric mscales and its rotary reads L_orig from inside the dict; docs/phimoe.md).
- A `rope_parameters` mirror (5.x's name) beside rope_scaling is harmless in both.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from ..architectures import ARCHITECTURES, Architecture, architecture_for
from ..errors import ConfigError, SpecError
from ..factor_set import FactorSet
from ..json_io import read_json
from ..spec import LongRopeSpec, default_attention_factor
from .geometry import geometry
from .rope_keys import (
    LONGROPE_TYPES,
    original_max_positions,
    rope_dict,
    rope_theta,
    rope_type,
)

log = logging.getLogger(__name__)


def read_config(path: str | Path) -> dict:
    """Load config.json (or a folder holding one) as a dict, with one-line errors."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    config = read_json(path, ConfigError)
    if not isinstance(config, dict):
        raise ConfigError("expected a JSON object at the top level", path)
    return config


def spec_from_config(config: dict, source: str = "config.json") -> LongRopeSpec | None:
    """The LongRoPE spec a config describes, or None when its rope is not longrope/su."""
    rope = rope_dict(config)
    if rope is None or rope_type(rope) not in LONGROPE_TYPES:
        return None
    geo = geometry(config, source)
    l_orig = original_max_positions(config)
    if l_orig is None:
        raise ConfigError("longrope config has no original_max_position_embeddings", source)
    max_pos = int(config.get("max_position_embeddings") or l_orig)
    explicit = rope.get("attention_factor")
    factor = rope.get("factor")
    if explicit is None and factor and not math.isclose(float(factor), max_pos / l_orig, rel_tol=1e-9):
        # transformers derives mscale from `factor` when present: keep that behaviour explicit.
        explicit = default_attention_factor(float(factor), l_orig)
    short_mscale, long_mscale = _mscales(rope, source) if _reads_mscales(config) else (None, None)
    try:
        return LongRopeSpec(
            long_factor=tuple(rope.get("long_factor") or ()),
            short_factor=tuple(rope.get("short_factor") or ()),
            original_max_position_embeddings=l_orig,
            max_position_embeddings=max_pos,
            rope_theta=rope_theta(config),
            rotary_dim=geo.rotary_dim,
            explicit_attention_factor=float(explicit) if explicit is not None else None,
            rotary_dim_source=geo.rotary_dim_derivation,
            short_attention_factor=short_mscale,
            long_attention_factor=long_mscale,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"longrope factors are not numbers ({exc})", source) from None
    except SpecError as exc:
        raise ConfigError(str(exc), source) from None


def _reads_mscales(config: dict) -> bool:
    """Only PhiMoE's modeling code reads short/long_mscale; LLaMA/Mistral/Qwen2/Phi-3 ignore them (FACTS.md)."""
    names = config.get("architectures") or []
    first = names[0] if isinstance(names, list) and names else None
    return any(a.config_style == "phimoe" and (a.hf_class == first or a.model_type == config.get("model_type"))
               for a in ARCHITECTURES.values())


def _mscales(rope: dict, source: str) -> tuple[float | None, float | None]:
    """PhiMoE's per-set attention factors (`short_mscale`/`long_mscale`), each replacing the default factor."""
    values = []
    for key in ("short_mscale", "long_mscale"):
        value = rope.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ConfigError(f"rope_scaling '{key}' must be a number, got {value!r}", source)
        values.append(float(value) if value is not None else None)
    return values[0], values[1]


def longrope_config(config: dict, spec: LongRopeSpec, source: str = "config.json") -> dict:
    """A copy of `config` carrying `spec` in the layout that loads alike in transformers 4.51+ and 5.x."""
    arch = architecture_for(config, source)
    out = {k: v for k, v in config.items() if k not in ("rope_scaling", "rope_parameters", "auto_map")}
    if "auto_map" in config:
        log.info("%s: dropped auto_map; the baked checkpoint uses transformers' built-in %s (no remote code)",
                 source, arch.hf_class)
    out["rope_theta"] = spec.rope_theta
    out["max_position_embeddings"] = spec.max_position_embeddings
    out["original_max_position_embeddings"] = spec.original_max_position_embeddings
    geo = geometry(config, source)
    if geo.partial_rotary_factor != 1.0:
        out["partial_rotary_factor"] = geo.partial_rotary_factor
    out["rope_scaling"] = _rope_scaling(arch, spec)
    if arch.config_style == "llama":
        out["head_dim"] = geo.head_dim
    out["rope_parameters"] = _rope_parameters(arch, spec)
    return out


def _phimoe_rope(spec: LongRopeSpec) -> dict[str, Any]:
    """PhiMoE's keys: both mscales (each set's attention factor, replacing the default) and L_orig inside."""
    return {
        "short_factor": list(spec.short_factor),
        "long_factor": list(spec.long_factor),
        "short_mscale": spec.attention_factor_for(FactorSet.SHORT),
        "long_mscale": spec.attention_factor_for(FactorSet.LONG),
        "original_max_position_embeddings": spec.original_max_position_embeddings,
    }


def _rope_scaling(arch: Architecture, spec: LongRopeSpec) -> dict[str, Any]:
    if arch.config_style == "phimoe":
        return {"type": "longrope", **_phimoe_rope(spec)}
    if arch.config_style == "phi3":
        if spec.explicit_attention_factor is not None and not math.isclose(
            spec.explicit_attention_factor, spec.attention_factor_default, rel_tol=1e-12
        ):
            raise SpecError(
                f"{arch.hf_class} configs cannot carry an explicit attention factor that transformers 4.x reads "
                f"(got {spec.explicit_attention_factor}, default {spec.attention_factor_default}); omit it"
            )
        return {"type": "longrope", "short_factor": list(spec.short_factor), "long_factor": list(spec.long_factor)}
    scaling: dict[str, Any] = {
        "rope_type": "longrope",
        "type": "longrope",
        "short_factor": list(spec.short_factor),
        "long_factor": list(spec.long_factor),
        "original_max_position_embeddings": spec.original_max_position_embeddings,
        "factor": spec.scale,
    }
    if spec.explicit_attention_factor is not None:
        scaling["attention_factor"] = spec.explicit_attention_factor
    return scaling


def _rope_parameters(arch: Architecture, spec: LongRopeSpec) -> dict[str, Any]:
    """5.x's name for the same dict. Phi-3 keeps L_orig at top level only (5.x warns when it is mirrored)."""
    params: dict[str, Any] = {
        "rope_type": "longrope",
        "rope_theta": spec.rope_theta,
        "short_factor": list(spec.short_factor),
        "long_factor": list(spec.long_factor),
    }
    if arch.config_style == "phimoe":
        return {"rope_type": "longrope", "rope_theta": spec.rope_theta, **_phimoe_rope(spec)}
    if arch.config_style == "phi3":
        return params
    params["original_max_position_embeddings"] = spec.original_max_position_embeddings
    params["factor"] = spec.scale
    if spec.explicit_attention_factor is not None:
        params["attention_factor"] = spec.explicit_attention_factor
    return params
