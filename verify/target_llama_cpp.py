"""Target: a GGUF file run by llama.cpp (llama-cpp-python), with n_ctx chosen per case.

llama.cpp fixes the factor set per context (long iff n_ctx padded to 256 > L_orig), so each case picks
n_ctx = L_orig for lengths <= L_orig, else the smallest multiple of 256 above L_orig covering the length:
then llama.cpp uses the set transformers would. When L_orig is not a multiple of 256 a short case may be
impossible; the reference then runs with the set llama.cpp must use and the table says so. There is no
decode case: the set cannot change inside one llama.cpp context. A case whose context (weights, KV cache,
scores, the compared positions' logits) does not fit in host memory is skipped with a reason. A GGUF without
factor tensors llama.cpp loads (formats.gguf.reader.missing_factor_reason) fails every case with that reason and
reports no factor set, even where plain RoPE happens to be close to the reference.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..formats.factor_set import (
    FactorSet,
    choose_by_context_size,
    choose_by_sequence_length,
    llama_cpp_padded_ctx,
)
from ..formats.gguf.reader import read_gguf_facts
from ..formats.hf.geometry import ModelGeometry
from .cases import Case
from .divergences import llama_cpp_divergence
from .memory import available_host_bytes, too_big_reason
from .targets import TargetContext, TargetError, TargetOutput

log = logging.getLogger(__name__)


class LlamaCppTarget:
    kind = "gguf"

    def __init__(self, path: Path, context: TargetContext):
        from . import llama_cpp_runner

        self.runner = llama_cpp_runner
        self.path = str(path)
        self.l_orig = context.spec.original_max_position_embeddings
        self.facts = read_gguf_facts(path)
        self.precision = self.facts.precision
        self.geometry = context.geometry
        self.spec = context.spec
        # llama.cpp routes MoE experts its own way (a GGUF cannot change it): the truth uses that rule, so the
        # comparison still checks the rope and every weight
        self.reference_routing = context.checkpoint.arch.gguf_moe_routing
        self.file_bytes = path.stat().st_size
        self.name = f"gguf:{path.name} ({self.precision})"
        if self.facts.missing_factors:
            log.warning("%s: %s", path, self.facts.missing_factors)
        if self.facts.l_orig is not None and self.facts.l_orig != self.l_orig:
            log.warning("%s: original_context_length %d differs from the reference's L_orig %d",
                        path, self.facts.l_orig, self.l_orig)

    @classmethod
    def open(cls, path: Path | None, context: TargetContext) -> "LlamaCppTarget":
        if path is None or not Path(path).is_file():
            raise TargetError("GGUF file not found", path)
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise TargetError("llama-cpp-python is not installed (pip install 'longrope-convert[llama]')") from None
        return cls(Path(path), context)

    def n_ctx(self, case: Case) -> int:
        return n_ctx_for(case.length, self.l_orig)

    def skip_reason(self, case: Case) -> str | None:
        if case.is_decode:
            return "llama.cpp fixes the factor set per context; no switch inside a KV cache"
        n_ctx = self.n_ctx(case)
        keep = case.compared_positions(self.geometry.vocab_size)
        needed = llama_cpp_context_bytes(n_ctx, keep, self.geometry, self.runner.UBATCH) + self.file_bytes
        return too_big_reason(needed, available_host_bytes(), f"llama.cpp with n_ctx {n_ctx} (host)")

    def expected_set(self, case: Case) -> FactorSet:
        return choose_by_context_size(self.n_ctx(case), self.l_orig)

    def run(self, case: Case, input_ids: torch.Tensor, positions: torch.Tensor) -> TargetOutput:
        n_ctx = self.n_ctx(case)
        tokens = [int(t) for t in input_ids[0].tolist()]
        logits = self.runner.llama_cpp_logits(self.path, tokens, n_ctx, positions=positions.tolist())
        if not self.facts.has_factors:  # llama.cpp ran plain RoPE: no factor set to report, and a failure
            return TargetOutput(torch.from_numpy(logits), None, f"n_ctx {n_ctx}", failure=self.facts.missing_factors)
        used = self.facts.single_set or FactorSet(
            self.runner.gguf_factor_set(n_ctx, self.facts.l_orig or self.l_orig))
        rule = choose_by_sequence_length(case.length, self.l_orig)
        note = f"n_ctx {n_ctx}" + ("" if used == rule else f"; transformers would use {rule.value}")
        return TargetOutput(torch.from_numpy(logits), used.value, note,
                            expected_divergence=llama_cpp_divergence(self.spec, used))

    def close(self) -> None:
        pass


def llama_cpp_context_bytes(n_ctx: int, keep: int, geo: ModelGeometry, ubatch: int) -> int:
    """A float32 context of n_ctx: KV cache, two score buffers of heads x ubatch x n_ctx, llama.cpp's and
    llama-cpp-python's logit buffers of one batch each, and our `keep` rows of logits."""
    kv_cache = geo.kv_cache_bytes(n_ctx, 4)
    scores = 2 * geo.num_heads * min(ubatch, n_ctx) * n_ctx * 4
    return kv_cache + scores + (2 * ubatch + keep) * geo.vocab_size * 4


def n_ctx_for(length: int, l_orig: int) -> int:
    """L_orig when `length` fits in it (short set), else a multiple of 256 above L_orig covering it (long set)."""
    if length <= l_orig:
        return l_orig
    return llama_cpp_padded_ctx(max(length, l_orig + 1))
