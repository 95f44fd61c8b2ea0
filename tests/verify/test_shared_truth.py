"""One reference forward answers every prefill case that needs the same truth: the same logits as each case's own
forward, fewer forwards, and the report says which forward each case's truth came from."""

import torch
from longrope_convert.formats.factor_set import FactorSet
from longrope_convert.verify.case_truth import TruthRunners, TruthStore, truth_groups
from longrope_convert.verify.cases import Case, positions_in
from longrope_convert.verify.reference_run import ReferenceRunner
from longrope_convert.verify.runner import VerifyOptions, run_verification, token_ids


class _Target:
    """What truth_groups asks of a target: its skip reason and factor set per case."""

    def __init__(self, skipped=(), routing=None):
        self.skipped, self.reference_routing = set(skipped), routing

    def skip_reason(self, case):
        return "skipped" if case.length in self.skipped else None

    def expected_set(self, case):
        return FactorSet.SHORT if case.length <= 256 else FactorSet.LONG


class _CountingRunner(ReferenceRunner):
    """A reference that counts its prefill forwards and the tokens they cover."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.forwards = []

    def prefill(self, ids, factor_set, positions):
        self.forwards.append(ids.shape[1])
        return super().prefill(ids, factor_set, positions)


CASES = [Case("short", 128), Case("at L_orig", 256), Case("L_orig+1", 257), Case("long", 512)]


def test_groups_collect_the_cases_each_truth_is_needed_for():
    groups = truth_groups(CASES + [Case("decode", 255, 2)], [_Target(), _Target(skipped={512}, routing="softmax")])
    assert groups == {
        (FactorSet.SHORT, None): CASES[:2], (FactorSet.LONG, None): CASES[2:],
        (FactorSet.SHORT, "softmax"): CASES[:2], (FactorSet.LONG, "softmax"): [CASES[2]],
    }


def test_one_forward_per_group_gives_each_case_its_own_forwards_logits(llama_model):
    reference = _CountingRunner(llama_model.baked, None)  # the checkpoint's own spec: L_orig 256
    vocab = reference.model.geo.vocab_size
    ids = token_ids(vocab, 512, seed=0)
    positions = {c: positions_in(c.position_ranges(vocab, 256)) for c in CASES}
    store = TruthStore(TruthRunners(reference, None), ids, positions, truth_groups(CASES, [_Target()]))
    shared = {c: store.prefill(c, (_Target().expected_set(c), None)) for c in CASES}
    assert reference.forwards == [256, 512]  # not 128, 256, 257, 512
    assert [(tokens, ran) for _, tokens, ran in shared.values()] == [(256, True), (256, False), (512, True),
                                                                     (512, False)]
    for case in CASES:
        own = reference.prefill(ids[:, :case.length], _Target().expected_set(case), positions[case]).logits
        torch.testing.assert_close(shared[case][0].logits, own, rtol=0, atol=1e-10)
    assert store._shared == {}  # every group served: its logits were freed


def test_the_report_says_which_forward_a_case_was_read_from(llama_model):
    report = run_verification(VerifyOptions(src=llama_model.baked, lengths="128,256,257,512,255+2", device="cpu",
                                            progress=False, precision_floor=True))
    assert report.passed
    tokens = {c.label: c.reference_tokens for c in report.cases}
    assert tokens == {"128": 256, "256": 256, "257": 512, "512": 512, "255+2": 257}
    seconds = {c.label: c.reference_seconds for c in report.cases}
    assert seconds["128"] > 0 and seconds["257"] > 0 and seconds["256"] == seconds["512"] == 0
    assert all(c.precision_floor for c in report.cases)  # each case still has its own floor
