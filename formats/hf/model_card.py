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
{llama_cpp_recipe(spec)}"""


def llama_cpp_recipe(spec: LongRopeSpec, gguf_name: str = "model-q4_k_m.gguf") -> str:
    """How to make and run a GGUF with llama.cpp, and which `-c` selects which factor set."""
    l_orig, top = spec.original_max_position_embeddings, spec.max_position_embeddings
    g = LLAMA_CPP_CTX_GRANULARITY
    short_ctx = l_orig // g * g  # the largest -c that rounds up to at most L_orig (0: none does)
    short_line = (f"llama-cli -m {gguf_name} -c {short_ctx}      # short factors: the original context" if short_ctx
                  else f"# no -c gives the short factors: every context rounds up to at least {g} > {l_orig}")
    return f"""
## Running it with llama.cpp

```
longrope-convert hf-to-gguf . --outfile {gguf_name} --outtype q4_k_m    # or f16, bf16, q8_0, q5_k_m, q6_k, auto
llama-cli -m {gguf_name} -c {top}      # long factors (any -c above {l_orig} after rounding up to {g})
{short_line}
```

| `-c` (n_ctx) | factor set llama.cpp uses |
|---|---|
| 0 (the trained context, {top}) | long |
| rounded up to a multiple of {g}, > {l_orig} | long, for every prompt in that context |
| rounded up to a multiple of {g}, <= {l_orig} | short |

A prompt shorter than {l_orig} tokens in a long context still runs with the long factors: pick `-c` for the
prompts you expect. llama.cpp's own `convert_hf_to_gguf.py` drops LongRoPE factors for LLaMA/Mistral/Qwen2
(plain RoPE, no warning); `longrope-convert hf-to-gguf` writes them.
"""
