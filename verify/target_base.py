"""Shared behaviour of targets whose factor set follows the transformers rule (long iff length > L_orig)."""

from __future__ import annotations

from ..formats.factor_set import FactorSet
from ..formats.spec import LongRopeSpec
from .cases import Case


class SequenceRuleTarget:
    """Selection per forward by max(position)+1, as transformers and our dynamic ONNX graphs do."""

    kind = "?"
    name = "?"
    precision = "?"
    path: str | None = None
    has_cache = True

    def __init__(self, spec: LongRopeSpec):
        self.spec = spec

    def skip_reason(self, case: Case) -> str | None:
        if case.is_decode and not self.has_cache:
            return "no KV cache in this target"
        return None

    def expected_set(self, case: Case) -> FactorSet:
        return self.spec.factor_set_for_length(case.length)

    def step_sets_label(self, case: Case) -> str:
        """The set label a decode case should show: each step's set by total length."""
        from .reference_run import decode_set_label

        sets = [self.spec.factor_set_for_length(n) for n in range(case.prefill + 1, case.length + 1)]
        return decode_set_label(sets)

    def close(self) -> None:
        pass
