"""The README.md model card written beside a baked checkpoint: LongRoPE parameters users need to know."""

from __future__ import annotations

from ..factor_set import LLAMA_CPP_CTX_GRANULARITY
from ..spec import LongRopeSpec


def _vector(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def model_card(spec: LongRopeSpec, hf_class: str, source_name: str, tool_version: str) -> str:
    l_orig = spec.original_max_position_embeddings
    return f"""---
tags:
- longrope
- long-context
---

# {source_name} with LongRoPE ({spec.max_position_embeddings} tokens)

This checkpoint carries searched LongRoPE factors in `config.json` (`rope_type: "longrope"`), written by
longrope-convert {tool_version} in the layout that loads with identical behaviour in transformers 4.51+ and 5.x.
The weights are byte-identical to the source checkpoint.

| parameter | value |
|---|---|
| architecture | `{hf_class}` |
| original context L_orig | {l_orig} |
| max_position_embeddings | {spec.max_position_embeddings} |
| scale s | {spec.scale:.6g} |
| rope_theta | {spec.rope_theta:g} |
| rotary dim | {spec.rotary_dim} ({len(spec.long_factor)} factors per set) |
| attention factor (mscale) | {spec.attention_factor:.10g} ({"explicit" if spec.explicit_attention_factor is not None else "default sqrt(1 + ln s / ln L_orig)"}) |

long_factor: `{_vector(spec.long_factor)}`

short_factor: `{_vector(spec.short_factor)}`

## Which factor set runs when

- **transformers / ONNX (longrope-convert export)**: long factors iff the forward covers more than {l_orig}
  positions (past + current tokens), decided per forward. Exactly {l_orig} tokens use the short set.
  The KV cache is not re-rotated when a generation crosses {l_orig}.
- **llama.cpp (GGUF)**: long factors iff the context size n_ctx, rounded up to a multiple of
  {LLAMA_CPP_CTX_GRANULARITY}, exceeds {l_orig}; fixed for the whole context, whatever the prompt length.
"""
