"""Where a runtime departs from the reference by design, per architecture: the cause a verify row shows.

Each entry was measured on a tiny model and is explained in docs/phimoe.md; a runtime listed here that still
matches (e.g. a future transformers that fixes its PhiMoE rotary) simply passes.
"""

from __future__ import annotations

from ..formats.factor_set import FactorSet
from ..formats.spec import LongRopeSpec
from .cases import Case


def transformers_divergence(hf_class: str, version: str, spec: LongRopeSpec, case: Case) -> str:
    """transformers 5.x's PhimoeRotaryEmbedding.forward calls the longrope init without seq_len, so it builds the
    short inverse frequencies at every length (only short/long_mscale switches); 4.x passes seq_len and is right."""
    if hf_class != "PhimoeForCausalLM" or not version.startswith("5.") or spec.long_factor == spec.short_factor:
        return ""
    if spec.factor_set_for_length(case.length) is FactorSet.LONG:
        return f"transformers {version} PhiMoE: long factors not applied (short factors at every length)"
    return ""


def llama_cpp_divergence(spec: LongRopeSpec, used: FactorSet) -> str:
    """llama.cpp has one attn_factor key for both factor sets: where a spec's short and long attention factors
    (PhiMoE's short/long_mscale) differ, the GGUF stores the long one. (Its phimoe graph's own MoE routing, softmax
    top-2 renormalised, is not a divergence here: the truth runs with that rule for GGUF targets.)"""
    if spec.has_per_set_attention_factors and used is FactorSet.SHORT:
        return f"llama.cpp: one attention factor for both sets (the {used.value} set's mscale differs)"
    return ""
