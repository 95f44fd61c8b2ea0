"""Which of the two LongRoPE factor sets is active, and the runtimes' rules for choosing it."""

from __future__ import annotations

import enum

LLAMA_CPP_CTX_GRANULARITY = 256  # llama.cpp pads n_ctx up to a multiple of this


class FactorSet(str, enum.Enum):
    SHORT = "short"
    LONG = "long"

    def other(self) -> "FactorSet":
        return FactorSet.LONG if self is FactorSet.SHORT else FactorSet.SHORT


def choose_by_sequence_length(total_length: int, original_max_position_embeddings: int) -> FactorSet:
    """transformers / ONNX rule: long iff max(position_ids)+1 (past + current tokens) > L_orig, per forward."""
    return FactorSet.LONG if total_length > original_max_position_embeddings else FactorSet.SHORT


def llama_cpp_padded_ctx(n_ctx: int) -> int:
    """The context size llama.cpp actually allocates for a requested n_ctx."""
    g = LLAMA_CPP_CTX_GRANULARITY
    return ((n_ctx + g - 1) // g) * g


def choose_by_context_size(n_ctx: int, original_max_position_embeddings: int) -> FactorSet:
    """llama.cpp rule: long iff the padded context size > L_orig, fixed for the whole context."""
    padded = llama_cpp_padded_ctx(n_ctx)
    return FactorSet.LONG if padded > original_max_position_embeddings else FactorSet.SHORT
