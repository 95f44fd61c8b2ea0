"""transformers' own SDPA attention, with key/value heads expanded before SDPA on CUDA ("longrope_sdpa").

Why: for GQA models transformers calls `scaled_dot_product_attention(..., enable_gqa=True)` (4.57 and 5.x, when
there is no mask). On CUDA the fused kernels refuse GQA in float32, so SDPA falls back to the math kernel, which
materialises [heads, T, T] scores: 64 GiB per layer at 32k tokens (measured on an H200). With the heads expanded
first (`repeat_kv`), SDPA picks the float32 memory-efficient kernel instead (0.1 s per layer at 32k). The
arithmetic is the same; only the kernel choice changes. CPU never falls back this way, so there the function is
transformers' own unchanged (the tests prove expanding on CPU does not move the logits either).

Everything else (masks, dropout, scaling, `is_causal`, cache slicing) is transformers' own `sdpa_attention_forward`,
called with the expanded tensors, so it stays identical across the versions we support (4.51+ and 5.x).
"""

from __future__ import annotations

import torch

ATTENTION_NAME = "longrope_sdpa"


def expands_heads(query: torch.Tensor) -> bool:
    """Whether to expand key/value heads before SDPA: only where fused kernels would refuse GQA (CUDA). A
    module-level function so tests can switch the CUDA branch on for CPU tensors."""
    return query.is_cuda


class _ExpandedHeadsModule:
    """The attention module as transformers' SDPA forward should see it once k/v are expanded.

    It hides `num_key_value_groups`: with it, transformers would repeat the heads a second time (4.x), pack the
    query (5.x decode) or still pass `enable_gqa=True`, which is the very flag that sends float32 to the math
    kernel. Every other attribute (`is_causal`, ...) is the real module's.
    """

    __slots__ = ("_module",)

    def __init__(self, module: torch.nn.Module):
        object.__setattr__(self, "_module", module)

    def __getattr__(self, name: str):
        if name == "num_key_value_groups":
            raise AttributeError(name)
        return getattr(self._module, name)


def longrope_sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
    """transformers' `sdpa_attention_forward`, with key/value expanded to the query's head count first when
    `expands_heads(query)` says so; the same signature and return value ((output, None))."""
    from transformers.integrations.sdpa_attention import (
        repeat_kv,
        sdpa_attention_forward,
    )

    q_heads, kv_heads = query.shape[1], key.shape[1]
    if q_heads != kv_heads and expands_heads(query):
        if q_heads % kv_heads:
            raise ValueError(f"{q_heads} query heads are not a multiple of {kv_heads} key/value heads")
        n_rep = q_heads // kv_heads
        key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
        module = _ExpandedHeadsModule(module)
    return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)


def register_longrope_attention() -> str:
    """Register "longrope_sdpa" with transformers (idempotent) and return the name to pass as
    `attn_implementation`.

    The attention function goes to `AttentionInterface`. Its mask must be SDPA's too: since 4.53 models build masks
    through `AttentionMaskInterface`, and a name missing there gets no mask at all (fine for plain causal prefill,
    wrong for sliding windows or padding), so the function registered for "sdpa" is registered for our name. Before
    4.53 there is no mask registry; models then hand custom names the eager-style 4D mask, which SDPA also accepts.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, longrope_sdpa_attention_forward)
    try:
        from transformers.masking_utils import (
            ALL_MASK_ATTENTION_FUNCTIONS,
            AttentionMaskInterface,
        )
    except ImportError:  # transformers < 4.53
        return ATTENTION_NAME
    AttentionMaskInterface.register(ATTENTION_NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return ATTENTION_NAME
