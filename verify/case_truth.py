"""The truth of every case, with one reference forward shared by the prefill cases that need the same one.

Every case reads a prefix of the same seeded token ids, and a causal decoder's logits at position p depend on
tokens 0..p only. So the prefill cases that need the truth with the same factor set and MoE routing rule are
answered by one forward over the longest of them, with logits at the union of their compared positions: the
default CPU cases L_orig/2 and L_orig come from one short forward, L_orig+1 and 2 x L_orig from one long forward.
A decode case runs its own cached steps. The float32 twin (the precision floor) is shared the same way.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from ..formats.errors import LongRopeError
from ..formats.factor_set import FactorSet
from .cases import Case
from .metrics import LogitComparison
from .reference_run import ReferenceRunner, TruthLogits, decode_set_label
from .routing_flips import precision_floor
from .targets import Target

TruthKey = tuple[FactorSet | None, str | None]  # (the set, or None for a decode case's own steps; routing rule)


class MemoryBudgetError(LongRopeError):
    """A case given with --lengths is too long for the reference on this device."""


@dataclass
class TruthRunners:
    """The float64 reference, and the float32 one whose distance from it is each case's precision floor."""

    reference: ReferenceRunner
    floor: ReferenceRunner | None


def truth_key(case: Case, target: Target) -> TruthKey:
    """The truth a target is compared with on a case: its factor set (None: a decode case's own) and MoE routing."""
    return (None if case.is_decode else target.expected_set(case), getattr(target, "reference_routing", None))


def truth_groups(cases: list[Case], targets: list[Target]) -> dict[TruthKey, list[Case]]:
    """The prefill cases each truth is needed for (targets that skip a case ask for none)."""
    groups: dict[TruthKey, list[Case]] = defaultdict(list)
    for case in cases:
        for target in targets:
            if not case.is_decode and target.skip_reason(case) is None:
                key = truth_key(case, target)
                if case not in groups[key]:
                    groups[key].append(case)
    return dict(groups)


@dataclass
class _SharedForward:
    truth: TruthLogits  # at `positions`
    positions: torch.Tensor  # sorted, the union of the waiting cases' compared positions
    waiting: set[Case]  # cases not served yet; the forward is dropped when none is left
    tokens: int  # length of the forward


class TruthStore:
    """Reference (and float32 twin) logits for each case, one forward per group of prefill cases."""

    def __init__(self, runners: TruthRunners, ids: torch.Tensor, positions: dict[Case, torch.Tensor],
                 groups: dict[TruthKey, list[Case]]):
        self.runners, self.ids, self.positions, self.groups = runners, ids, positions, groups
        self._shared: dict[tuple[bool, TruthKey], _SharedForward] = {}  # (twin?, key) -> forward
        self._served: dict[tuple[bool, TruthKey], set[Case]] = {}

    def prefill(self, case: Case, key: TruthKey, twin: bool = False) -> tuple[TruthLogits, int, bool]:
        """The truth (or its float32 twin) at the case's compared positions, the tokens of the forward they came
        from (this case's length, or a longer case's whose prefix it is), and whether that forward ran just now."""
        shared = self._shared.get((twin, key))
        ran = shared is None or case not in shared.waiting
        if ran:
            shared = self._shared[(twin, key)] = self._run_group(case, key, twin)
        shared.waiting.discard(case)
        self._served.setdefault((twin, key), set()).add(case)
        if not shared.waiting:  # every case of the group has its rows: free the logits
            del self._shared[(twin, key)]
        rows = torch.searchsorted(shared.positions, self.positions[case])
        margin = shared.truth.routing_margin
        return TruthLogits(shared.truth.logits[rows.to(shared.truth.logits.device)],
                           None if margin is None else margin[rows]), shared.tokens, ran

    def _run_group(self, case: Case, key: TruthKey, twin: bool) -> _SharedForward:
        """One forward for `case` and every planned case of its group not served yet (just `case` when the plan
        did not foresee it, e.g. a skip reason that changed)."""
        served = self._served.get((twin, key), set())
        group = {c for c in self.groups.get(key, []) if c not in served} | {case}
        tokens = max(c.length for c in group)
        positions = torch.cat([self.positions[c] for c in group]).unique(sorted=True)
        runner = self.runners.floor if twin else self.runners.reference

        def run() -> TruthLogits:
            with runner.moe_routing(key[1]):
                return runner.prefill(self.ids[:, :tokens], key[0], positions)

        return _SharedForward(_guarded(tokens, run), positions, group, tokens)

    def decode(self, case: Case, routing: str | None, twin: bool = False) -> TruthLogits:
        """A decode case's own prefill and cached steps."""
        runner = self.runners.floor if twin else self.runners.reference

        def run() -> TruthLogits:
            with runner.moe_routing(routing):
                return runner.decode(self.ids[:, :case.length], case.prefill)

        return _guarded(case.length, run)


def _guarded(tokens: int, run):
    try:
        return run()
    except torch.cuda.OutOfMemoryError:
        raise MemoryBudgetError(
            f"the reference at {tokens} tokens does not fit in GPU memory; pass shorter --lengths or "
            "--reference-dtype float32") from None


class CaseTruth:
    """One case's view of the store: the truth per (set, routing) the targets ask for, with the float32 floor
    per set, and what the case report says of them."""

    def __init__(self, case: Case, store: TruthStore):
        self.case, self.store = case, store
        self.by_key: dict[TruthKey, TruthLogits] = {}
        self.floors: dict[FactorSet | None, LogitComparison] = {}  # one per set, whatever the routing
        self.seconds = 0.0  # running reference forwards (0 when every row was read from an earlier case's)
        self.tokens = case.length  # the longest reference forward this case's rows came from
        self.decode_label = ""

    def logits(self, key: TruthKey) -> tuple[TruthLogits, str]:
        """The truth for `key`, and its set label. `key`'s routing runs the truth with a runtime's own MoE rule
        (llama.cpp's phimoe), so its rope is still checked."""
        if key not in self.by_key:
            start = time.perf_counter()
            self.by_key[key], ran = self._truth(key, twin=False)
            self.seconds += time.perf_counter() - start if ran else 0.0
            if self.store.runners.floor is not None and key[0] not in self.floors:
                self.floors[key[0]] = precision_floor(self.by_key[key], self._truth(key, twin=True)[0])
        return self.by_key[key], self._label(key[0])

    def _truth(self, key: TruthKey, twin: bool) -> tuple[TruthLogits, bool]:
        """The truth for `key` (or its twin), and whether a forward ran for it just now."""
        if self.case.is_decode:
            truth = self.store.decode(self.case, key[1], twin)
            self.decode_label = decode_set_label(list(truth.sets))
            return truth, True
        truth, tokens, ran = self.store.prefill(self.case, key, twin)
        self.tokens = max(self.tokens, tokens)
        return truth, ran

    def floor(self, which: FactorSet | None) -> LogitComparison | None:
        """The case's float32 floor with `which`: measured once per set, with whichever routing rule ran first
        (the floor is float32 arithmetic; the rule decides only which experts it runs through)."""
        return self.floors.get(which)

    def _label(self, which: FactorSet | None) -> str:
        """"short", "long", or the decode steps' sets ("short->long")."""
        return self.decode_label if which is None else which.value

    def labels(self) -> list[str]:
        """The sets the truth ran with, once each (under the architecture's own routing or a runtime's)."""
        return list(dict.fromkeys(self._label(which) for which, _ in self.by_key))

    def floor_dicts(self) -> dict[str, dict]:
        """Per reference set: how far float32 (the runtimes' order of operations) is from the float64 truth."""
        return {self._label(k): {"rel_l2": f.relative_l2, "kl": f.mean_kl, "top1": f.top1_agreement}
                for k, f in self.floors.items()}
