"""Target: an exported ONNX decoder folder run by onnxruntime (CUDA provider when verify runs on CUDA).

The set it reports comes from the graph's own metadata (dynamic, or frozen at one set); the reference always
uses the transformers rule, so a frozen graph fails on the other side of L_orig.
A standard-ops graph materialises [heads, T, T] float32 scores; a GroupQueryAttention graph (the default export)
needs memory linear in T. The graph's metadata says which, and a case whose forward does not fit in the memory
onnxruntime draws from (host, or GPU with the CUDA provider) is skipped with a reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..formats.errors import LongRopeError
from ..formats.factor_set import FactorSet
from ..formats.hf.geometry import ModelGeometry
from ..formats.onnx.attention_forms import GQA, STANDARD
from ..formats.onnx.metadata import selection_text
from .cases import Case
from .memory import available_gpu_bytes, available_host_bytes, too_big_reason
from .report import join_notes
from .target_base import SequenceRuleTarget
from .targets import TargetContext, TargetError, TargetOutput


class OnnxTarget(SequenceRuleTarget):
    kind = "onnx"
    expresses_start_tokens = True  # the graph applies its own n_hat (metadata); compared against the truth's

    def __init__(self, folder: Path, context: TargetContext):
        from .onnx_runner import OnnxDecoderSession

        super().__init__(context.spec)
        self.path = str(folder)
        try:
            self.session = OnnxDecoderSession(folder, providers=_providers(context.device))
        except LongRopeError:
            raise
        except Exception as exc:  # onnxruntime's own load errors: a bad artifact, not a bug in verify
            raise TargetError(f"onnxruntime cannot load the graph: {exc}", folder) from None
        self.has_cache = self.session.has_past
        self.precision = self.session.facts.dtype
        self.name = f"onnx:{folder.name} ({self.precision})"
        self.frozen = _frozen_set(self.session.facts.selection)
        self.geometry = context.geometry
        self.on_gpu = self.session.session.get_providers()[0] == "CUDAExecutionProvider"

    @classmethod
    def open(cls, path: Path | None, context: TargetContext) -> "OnnxTarget":
        if path is None or not Path(path).is_dir():
            raise TargetError("an ONNX target needs an exported folder", path)
        return cls(Path(path), context)

    def skip_reason(self, case: Case) -> str | None:
        reason = super().skip_reason(case)
        if reason:
            return reason
        available = available_gpu_bytes() if self.on_gpu else available_host_bytes()
        where = "GPU" if self.on_gpu else "host"
        attention = self.session.facts.attention
        return too_big_reason(onnx_forward_bytes(case.prefill, self.geometry, attention), available,
                              f"the graph's attention scores at {case.prefill} tokens ({where})")

    def run(self, case: Case, input_ids: torch.Tensor, positions: torch.Tensor) -> TargetOutput:
        ids = input_ids.cpu().numpy().astype(np.int64)
        note = join_notes(f"graph frozen at {self.frozen.value}" if self.frozen else "", self._start_tokens_note())
        if case.is_decode:
            _, past = self.session.forward(ids[:, :case.prefill])
            steps = []
            for pos in range(case.prefill, ids.shape[1]):
                logits, past = self.session.forward(ids[:, pos:pos + 1], past)
                steps.append(logits[0, -1])
            label = self.frozen.value if self.frozen else self.step_sets_label(case)
            return TargetOutput(torch.from_numpy(np.stack(steps)), label, note)
        logits, _ = self.session.forward(ids)
        used = self.frozen or self.expected_set(case)
        return TargetOutput(torch.from_numpy(np.ascontiguousarray(logits[0, positions.numpy()])), used.value, note)

    def _start_tokens_note(self) -> str:
        """Why the logits differ when the graph's n_hat (metadata) is not the truth's (verify --start-tokens)."""
        graph, truth = self.session.spec.start_tokens, self.spec.start_tokens
        if graph == truth:
            return f"n_hat {graph}" if graph else ""
        return f"graph has n_hat {graph} start tokens, reference {truth} (verify --start-tokens {graph})"


# GroupQueryAttention graph: float32 values live per token at the peak of one layer (the residual stream and norm
# outputs, fused qkv, rotated q/k, attention output, gate/up/act of the MLP, each up to twice while onnxruntime
# holds an input and an output); the whole KV cache and the logits come on top. For hidden 512 / 16 heads of 32 /
# intermediate 1408 / vocab 512 this gives ~88 KB per token; bench/bench_onnx_long.py measured ~46 KB per token
# of peak RSS growth from 4k to 16k tokens, so the guard keeps a ~2x margin.
GQA_LIVE_HIDDEN_COPIES = 12
GQA_LIVE_MLP_COPIES = 4


def onnx_forward_bytes(tokens: int, geo: ModelGeometry, attention: str = STANDARD) -> int:
    """Peak of one forward over `tokens` new tokens with no cache.

    standard: up to three live float32 score tensors [heads, T, T] (scores, masked scores, probabilities), the bool
    mask, and logits [T, vocab]. gqa: no score tensor (the fused op works in tiles); activations, the KV cache of
    every layer and the logits, all linear in T."""
    logits = 2 * tokens * geo.vocab_size * 4
    if attention == GQA:
        qkv = (geo.num_heads + 2 * geo.num_kv_heads) * geo.head_dim
        per_token = (GQA_LIVE_HIDDEN_COPIES * max(geo.hidden_size, qkv)
                     + GQA_LIVE_MLP_COPIES * 2 * geo.intermediate_size) * 4
        kv_cache = geo.kv_cache_bytes(tokens, 4)
        return tokens * per_token + kv_cache + logits
    scores = geo.num_heads * tokens * tokens * 4
    return 3 * scores + tokens * tokens + logits


def _frozen_set(selection: str) -> FactorSet | None:
    """The set named by a frozen graph's selection text ("frozen: short at every length"), else None."""
    for which in FactorSet:
        if selection == selection_text(which):
            return which
    return None


def _providers(device: str) -> list[str]:
    """CUDA first on a CUDA run when this onnxruntime has it (onnxruntime-gpu), else the CPU."""
    import onnxruntime

    if device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
