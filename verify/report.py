"""The verify report: one CaseResult per target x case, plus what the truth was; versioned for --json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 2
PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


def join_notes(*notes: str) -> str:
    """The non-empty notes of a row, in order, as one `; `-separated note."""
    return "; ".join(n for n in notes if n)


@dataclass
class CaseInfo:
    """A case as the reference ran it."""

    name: str
    label: str  # "600" or "255+2"
    prefill: int
    steps: int
    length: int
    compared_positions: int
    reference_sets: list[str]  # the set(s) the reference ran this case with (several targets may differ)
    reference_seconds: float
    position_ranges: list[list[int]] = field(default_factory=list)  # [start, end) of the compared positions
    precision_floor: dict[str, dict] = field(default_factory=dict)  # reference set -> float32 vs float64 metrics
    # the tokens of the reference forward this case's truth was read from: its own length, or a longer case's
    # (same token prefix, causal attention: the same logits); the case that ran that forward carries its time in
    # reference_seconds, the others 0
    reference_tokens: int = 0  # 0: the case's own length

    def __post_init__(self):
        self.reference_tokens = self.reference_tokens or self.length


@dataclass
class CaseResult:
    """One target on one case."""

    target: str
    kind: str
    precision: str
    artifact: str | None
    case: str
    label: str
    length: int
    status: str  # pass | fail | skip | error
    factor_set: str | None = None  # the set the target says it used ("short->long" for a crossing decode)
    reference_set: str | None = None  # the set the reference used for this comparison
    metrics: dict | None = None  # LogitComparison.as_dict()
    tolerance: dict | None = None  # Tolerance.as_dict() at this length
    failures: list[str] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in (PASS, SKIP)


@dataclass
class VerifyReport:
    src: str
    device: str
    dtype: str
    seed: int
    reference: dict  # dtype, device, spec_source, l_orig, max_positions, attention_factor
    cache_semantics: str
    cases: list[CaseInfo] = field(default_factory=list)
    results: list[CaseResult] = field(default_factory=list)
    tool_version: str = ""
    schema_version: int = SCHEMA_VERSION
    # (target name, case label) -> (positions, relative error per position): drawn by --plot, not in the JSON
    curves: dict = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results) and any(r.status == PASS for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, SKIP: 0, ERROR: 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def as_dict(self) -> dict:
        data = asdict(self)
        del data["curves"]
        data["passed"] = self.passed
        data["counts"] = self.counts()
        return data
