"""Run a GGUF through llama.cpp (llama-cpp-python) and return the logits of every position.

llama_cpp is imported inside the functions: the verifier and CLI load without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy

from longrope_convert.formats.factor_set import FactorSet, choose_by_context_size


GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1
KV_CACHE_TYPES = {"f32": GGML_TYPE_F32, "f16": GGML_TYPE_F16}
# Tokens llama.cpp computes at once: attention scores are heads x UBATCH x n_ctx, not tokens^2.
UBATCH = 512
MAX_THREADS = 16  # long prompts scale with cores; past ~16 llama.cpp's CPU kernels gain little


def llama_cpp_logits(gguf_path: Path, token_ids: Sequence[int], n_ctx: int, n_threads: int | None = None,
                     *, kv_cache: str = "f32") -> numpy.ndarray:
    """[T, vocab] float32 logits of all positions from one prompt evaluation with context size `n_ctx`.

    The factor set llama.cpp uses is fixed by `n_ctx` (see `gguf_factor_set`), not by len(token_ids).
    The prompt is one batch (every position's logits) computed in micro-batches of UBATCH tokens.
    The KV cache is float32 by default so a parity check measures the weights and rope, not llama.cpp's
    default f16 cache (which alone adds ~1e-3 relative error); pass kv_cache="f16" for llama.cpp's default.
    """
    from llama_cpp import Llama

    ids = [int(t) for t in token_ids]
    if not ids or len(ids) > n_ctx:
        raise ValueError(f"need 1..n_ctx ({n_ctx}) tokens, got {len(ids)}")
    threads = n_threads or usable_threads()
    llm = Llama(
        model_path=str(gguf_path), n_ctx=n_ctx, n_batch=len(ids), n_ubatch=min(len(ids), UBATCH), logits_all=True,
        n_threads=threads, n_threads_batch=threads, verbose=False, n_gpu_layers=0, seed=0,
        type_k=KV_CACHE_TYPES[kv_cache], type_v=KV_CACHE_TYPES[kv_cache],
    )
    try:
        llm.eval(ids)
        return numpy.array(llm.scores[: len(ids)], dtype=numpy.float32, copy=True)
    finally:
        llm.close()


def usable_threads() -> int:
    """The CPUs this process may run on (cgroup/affinity aware), at most MAX_THREADS."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, count))


def gguf_factor_set(n_ctx: int, l_orig: int) -> FactorSet:
    """Which set llama.cpp uses for a context of n_ctx tokens (padded to 256) and a model with L_orig."""
    return choose_by_context_size(n_ctx, l_orig)
