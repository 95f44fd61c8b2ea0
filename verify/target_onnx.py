"""Target: an exported ONNX decoder folder run by onnxruntime (CUDA provider when verify runs on CUDA).

The set it reports comes from the graph's own metadata (dynamic, or frozen at one set); the reference always
uses the transformers rule, so a frozen graph fails on the other side of L_orig.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from longrope_convert.formats.errors import LongRopeError
from longrope_convert.formats.factor_set import FactorSet
from longrope_convert.formats.onnx_metadata import selection_text

from .cases import Case
from .target_base import SequenceRuleTarget
from .targets import TargetContext, TargetError, TargetOutput


class OnnxTarget(SequenceRuleTarget):
    kind = "onnx"

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

    @classmethod
    def open(cls, path: Path | None, context: TargetContext) -> "OnnxTarget":
        if path is None or not Path(path).is_dir():
            raise TargetError("an ONNX target needs an exported folder", path)
        return cls(Path(path), context)

    def run(self, case: Case, input_ids: torch.Tensor, keep: int) -> TargetOutput:
        ids = input_ids.cpu().numpy().astype(np.int64)
        note = f"graph frozen at {self.frozen.value}" if self.frozen else ""
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
        return TargetOutput(torch.from_numpy(np.ascontiguousarray(logits[0, -keep:])), used.value, note)


def _frozen_set(selection: str) -> FactorSet | None:
    """The set named by a frozen graph's selection text ("frozen: short at every length"), else None."""
    for which in FactorSet:
        if selection == selection_text(which):
            return which
    return None


def _providers(device: str) -> list[str]:
    if device == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
