"""Run a GGUF through llama.cpp (llama-cpp-python) and return the logits of the positions asked for.

The prompt goes through llama.cpp's own `llama_decode` in batches of UBATCH tokens, and only the kept tail
positions ask for logits, so memory is the KV cache plus heads x UBATCH x n_ctx scores plus keep x vocab,
never tokens^2 or tokens x vocab. llama_cpp is imported inside the functions: the verifier and CLI load
without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy

from ..formats.factor_set import FactorSet, choose_by_context_size

GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1
KV_CACHE_TYPES = {"f32": GGML_TYPE_F32, "f16": GGML_TYPE_F16}
UBATCH = 512  # tokens per llama_decode call (and per micro-batch)
MAX_THREADS = 16  # long prompts scale with cores; past ~16 llama.cpp's CPU kernels gain little


def llama_cpp_logits(gguf_path: Path, token_ids: Sequence[int], n_ctx: int, n_threads: int | None = None,
                     *, kv_cache: str = "f32", keep: int | None = None,
                     positions: Sequence[int] | None = None) -> numpy.ndarray:
    """[n, vocab] float32 logits at the sorted `positions` (or of the last `keep` positions; all when neither is
    given) of one prompt evaluation with context size `n_ctx`.

    The factor set llama.cpp uses is fixed by `n_ctx` (see `gguf_factor_set`), not by len(token_ids).
    The KV cache is float32 by default so a parity check measures the weights and rope, not llama.cpp's
    default f16 cache (which alone adds ~1e-3 relative error); pass kv_cache="f16" for llama.cpp's default.
    """
    from llama_cpp import Llama

    ids = [int(t) for t in token_ids]
    if not ids or len(ids) > n_ctx:
        raise ValueError(f"need 1..n_ctx ({n_ctx}) tokens, got {len(ids)}")
    wanted = _wanted_positions(len(ids), keep, positions)
    threads = n_threads or usable_threads()
    batch_size = min(len(ids), UBATCH)
    llm = Llama(
        model_path=str(gguf_path), n_ctx=n_ctx, n_batch=batch_size, n_ubatch=batch_size, logits_all=False,
        n_threads=threads, n_threads_batch=threads, verbose=False, n_gpu_layers=0, seed=0,
        type_k=KV_CACHE_TYPES[kv_cache], type_v=KV_CACHE_TYPES[kv_cache],
    )
    try:
        return _decode_keeping(llm, ids, wanted, batch_size)
    finally:
        llm.close()


def _wanted_positions(length: int, keep: int | None, positions: Sequence[int] | None) -> list[int]:
    if positions is not None:
        wanted = sorted({int(p) for p in positions})
        if not wanted or wanted[0] < 0 or wanted[-1] >= length:
            raise ValueError(f"positions must lie in 0..{length - 1}")
        return wanted
    keep = length if keep is None else keep
    if not 1 <= keep <= length:
        raise ValueError(f"keep must be 1..{length}, got {keep}")
    return list(range(length - keep, length))


def _decode_keeping(llm, ids: list[int], wanted: list[int], batch_size: int) -> numpy.ndarray:
    """Feed `ids` from position 0 in batches, asking for logits only at the `wanted` positions (sorted)."""
    import llama_cpp

    vocab, keep = llm.n_vocab(), set(wanted)
    out = numpy.empty((len(wanted), vocab), dtype=numpy.float32)
    row = 0
    batch = llama_cpp.llama_batch_init(batch_size, 0, 1)
    try:
        for start in range(0, len(ids), batch_size):
            piece, kept = ids[start:start + batch_size], 0
            for i, token in enumerate(piece):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = start + i in keep
                kept += batch.logits[i]
            batch.n_tokens = len(piece)
            status = llama_cpp.llama_decode(llm.ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status} at position {start}")
            if kept:  # llama.cpp packs the requested rows of this batch in order
                logits = numpy.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(kept, vocab))
                out[row:row + kept] = logits
                row += kept
    finally:
        llama_cpp.llama_batch_free(batch)
    return out


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
