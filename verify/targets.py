"""The target protocol and registry: every runtime verify checks is one module implementing `Target`.

Adding a runtime = one file with a class satisfying `Target` (plus `open(path, context)`) and one line in
TARGET_KINDS. The runner asks a target which factor set it should use for a case (the reference runs with that
set), runs it, and compares the logits it returns with the float64 reference.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..formats.errors import LongRopeError
from ..formats.factor_set import FactorSet
from ..formats.hf.checkpoint import Checkpoint
from ..formats.hf.geometry import ModelGeometry
from ..formats.spec import LongRopeSpec
from .cases import Case

if TYPE_CHECKING:  # pragma: no cover
    import torch

# kind -> "module:class"; imported only when a target of that kind is requested.
TARGET_KINDS = {
    "transformers": "longrope_convert.verify.target_transformers:TransformersTarget",
    "gguf": "longrope_convert.verify.target_llama_cpp:LlamaCppTarget",
    "onnx": "longrope_convert.verify.target_onnx:OnnxTarget",
}


class TargetError(LongRopeError):
    """A target cannot be opened (missing runtime, unreadable artifact, unknown kind)."""


@dataclass(frozen=True)
class TargetContext:
    """What every target gets: the checkpoint under test (opened once), the truth's spec, device and dtype."""

    checkpoint: Checkpoint
    spec: LongRopeSpec
    device: str  # "cpu" or "cuda"
    dtype: str  # float32 | bfloat16 | float16 (for targets whose precision is chosen at load time)
    device_map: str | dict | None = None  # verify --device-map: accelerate's placement for transformers

    @property
    def src(self) -> Path:
        return self.checkpoint.folder

    @property
    def geometry(self) -> ModelGeometry:
        return self.checkpoint.geometry


@dataclass(frozen=True)
class TargetOutput:
    """Logits [positions, vocab] for the case's compared positions, and what the target says it did."""

    logits: "torch.Tensor"
    factor_set: str | None  # "short", "long", "short->long" for a decode case crossing L_orig; None: no factors
    note: str = ""
    failure: str = ""  # a reason the case fails whatever the logits (a GGUF whose factor tensors are missing)
    # a documented reason this runtime departs from the reference on this case (verify/divergences.py): a mismatch
    # is then reported as SKIP with the cause and the measured numbers, not as a failure of the conversion
    expected_divergence: str = ""


class Target(Protocol):
    kind: str
    name: str  # shown in the table, e.g. "gguf:model-f32.gguf"
    precision: str  # key into tolerances.TOLERANCES with `kind`
    path: str | None

    @classmethod
    def open(cls, path: Path | None, context: TargetContext) -> "Target":
        """Load the target from its artifact (None for targets without one, like transformers on SRC)."""

    def skip_reason(self, case: Case) -> str | None:
        """Why the case does not apply to this target (None: run it)."""

    def expected_set(self, case: Case) -> FactorSet:
        """The set this target should use for a prefill case; the reference runs with it."""

    def run(self, case: Case, input_ids: "torch.Tensor", positions: "torch.Tensor") -> TargetOutput:
        """Run the case on ids [1, case.length]; logits at the sorted `positions` (decode: of the steps)."""

    def close(self) -> None:
        """Free the runtime's memory."""


@dataclass(frozen=True)
class TargetRequest:
    kind: str
    path: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind


def target_class(kind: str):
    """The class registered for `kind` (imports its module)."""
    if kind not in TARGET_KINDS:
        raise TargetError(f"unknown target kind {kind!r}; known: {', '.join(sorted(TARGET_KINDS))}")
    module, attr = TARGET_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), attr)


def open_target(request: TargetRequest, context: TargetContext) -> Target:
    """Load one target; missing runtimes and unreadable artifacts are TargetErrors (exit 2)."""
    target = target_class(request.kind).open(request.path, context)
    if context.spec.start_tokens and not getattr(target, "expresses_start_tokens", False):
        return CannotExpressStartTokens(target, context.spec.start_tokens)
    return target


class CannotExpressStartTokens:
    """A target checked against a truth with n_hat start tokens (verify --start-tokens) that its format cannot
    express (HF configs, GGUF): every case is SKIPPED with the reason, never compared. A comparison would only
    measure the missing feature, and a skip is no pass (a report needs one PASS)."""

    def __init__(self, inner: Target, start_tokens: int):
        self._inner, self._start_tokens = inner, start_tokens

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def skip_reason(self, case: Case) -> str | None:
        return (f"{self._inner.kind} cannot express n_hat = {self._start_tokens} start tokens (LongRoPE v1); "
                "only an export-onnx --start-tokens graph can")


def parse_target(text: str) -> TargetRequest:
    """`KIND=PATH` (or just `KIND` for targets that need no artifact, like transformers)."""
    kind, sep, path = text.partition("=")
    kind = kind.strip()
    if kind not in TARGET_KINDS:
        raise TargetError(f"--target {text!r}: unknown kind {kind!r}; known: {', '.join(sorted(TARGET_KINDS))}")
    return TargetRequest(kind, Path(path) if sep and path else None)
