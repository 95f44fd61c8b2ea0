"""A new runtime is one class in one module plus one registry entry: every registered kind implements the
protocol, and a plug-in registered at test time runs through the whole verify pipeline."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from longrope_convert.verify import targets
from longrope_convert.verify.runner import VerifyOptions, run_verification
from longrope_convert.verify.target_base import SequenceRuleTarget
from longrope_convert.verify.targets import TargetOutput, TargetRequest
from longrope_convert.verify.tolerances import parse_override

PROTOCOL = ("open", "skip_reason", "expected_set", "run", "close")


@pytest.mark.parametrize("kind", sorted(targets.TARGET_KINDS))
def test_every_registered_kind_implements_the_protocol(kind):
    cls = targets.target_class(kind)
    assert cls.kind == kind
    assert all(callable(getattr(cls, name, None)) for name in PROTOCOL)


class NoisyTarget(SequenceRuleTarget):
    """A 'runtime' that is the float32 reference plus noise of relative size `NOISE` (set per test)."""

    kind = "noisy"
    precision = "float32"
    has_cache = False
    NOISE = 0.0

    def __init__(self, context):
        from longrope_convert.verify.reference_model import ReferenceDecoder

        super().__init__(context.spec)
        self.name = "noisy"
        self.model = ReferenceDecoder(context.src, dtype=torch.float32, spec=context.spec)

    @classmethod
    def open(cls, path, context):
        return cls(context)

    def run(self, case, input_ids, positions):
        logits = self.model.forward(input_ids, factor_set=self.expected_set(case)).logits[0, positions]
        noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)) * logits.std() * self.NOISE
        return TargetOutput(logits + noise, self.expected_set(case).value)


@pytest.fixture
def noisy_registered(monkeypatch):
    module = types.ModuleType("verify_test_noisy_target")
    module.NoisyTarget = NoisyTarget
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(targets.TARGET_KINDS, "noisy", f"{module.__name__}:NoisyTarget")
    return NoisyTarget


@pytest.mark.parametrize("noise, status", [(0.0, "pass"), (1e-2, "fail")])
def test_a_plugged_in_target_runs_and_is_judged(demo_models, noisy_registered, monkeypatch, noise, status):
    monkeypatch.setattr(noisy_registered, "NOISE", noise)
    # an unregistered (kind, precision) gets the loose fallback limits (rel_l2 0.2); give this kind its own
    overrides = (parse_override("noisy.rel_l2=1e-3"),)
    report = run_verification(VerifyOptions(src=demo_models["Qwen2ForCausalLM"].baked,
                                            targets=(TargetRequest("noisy"),), lengths="200,600,255+2",
                                            device="cpu", progress=False, tolerances=overrides))
    rows = {r.label: r for r in report.results}
    assert rows["255+2"].status == "skip"  # no cache in this target
    assert rows["200"].status == rows["600"].status == status
    if noise == 0.0:
        assert rows["600"].metrics["relative_l2"] < 1e-5  # float32 vs float64, same code path
    else:
        assert rows["600"].metrics["relative_l2"] == pytest.approx(1e-2, rel=0.2)
    assert report.passed is (status == "pass")
