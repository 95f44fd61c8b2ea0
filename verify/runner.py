"""Orchestration of `verify`: the truth's spec, the cases, the reference, every target, the report.

The truth is the ReferenceDecoder (no transformers code) on SRC's weights with the LongRoPE spec from SRC's
config.json, or from `reference_spec` (another config.json) when the numbers baked into SRC are themselves
under test. Every target is loaded fresh here, never reused from an export.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .. import __version__
from ..formats.errors import ConfigError, LongRopeError
from ..formats.factor_set import FactorSet
from ..formats.hf.checkpoint import Checkpoint, open_checkpoint
from ..formats.hf.config import read_config, spec_from_config
from ..formats.spec import LongRopeSpec
from .cases import Case, default_cases, parse_lengths
from .metrics import compare_logits
from .reference_run import CACHE_SEMANTICS, ReferenceRunner, decode_set_label
from .report import ERROR, FAIL, PASS, SKIP, CaseInfo, CaseResult, VerifyReport
from .targets import Target, TargetContext, TargetRequest, open_target
from .tolerances import Override, failures, tolerance_for

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
REFERENCE_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class DeviceError(LongRopeError):
    """--device cuda without a CUDA device."""


class MemoryBudgetError(LongRopeError):
    """A case given with --lengths is too long for the reference on this device."""


@dataclass(frozen=True)
class VerifyOptions:
    src: Path
    targets: tuple[TargetRequest, ...] = (TargetRequest("transformers"),)
    lengths: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    tolerances: tuple[Override, ...] = ()
    reference_spec: Path | None = None
    reference_dtype: str | None = None  # None: float64, or float32 on CUDA when float64 does not fit
    seed: int = 0
    progress: bool = True
    allow_beyond_max: bool = False  # let --lengths go past the spec's max_position_embeddings


def resolve_device(requested: str) -> str:
    """auto -> cuda when available, else cpu; an explicit cuda without CUDA is a user error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    return requested


def truth_spec(checkpoint: Checkpoint, reference_spec: Path | None) -> tuple[LongRopeSpec, str]:
    """The spec the reference uses and where it came from; SRC must be a LongRoPE checkpoint either way."""
    own = checkpoint.require_spec()
    if reference_spec is None:
        return own, checkpoint.source
    source = reference_spec / "config.json" if reference_spec.is_dir() else reference_spec
    spec = spec_from_config(read_config(reference_spec), str(source))
    if spec is None:
        raise ConfigError("--reference-spec holds no LongRoPE rope scaling", source)
    if spec.rotary_dim != own.rotary_dim:
        raise ConfigError(f"--reference-spec rotary dim {spec.rotary_dim} != SRC's {own.rotary_dim}", source)
    for name, a, b in _spec_differences(own, spec):
        log.warning("SRC config differs from the reference spec: %s %s (SRC) vs %s (reference)", name, a, b)
    return spec, str(source)


def _spec_differences(a: LongRopeSpec, b: LongRopeSpec):
    for name in ("attention_factor", "original_max_position_embeddings", "max_position_embeddings", "rope_theta"):
        if getattr(a, name) != getattr(b, name):
            yield name, getattr(a, name), getattr(b, name)
    for name in ("long_factor", "short_factor"):
        if getattr(a, name) != getattr(b, name):
            yield name, "[...]", "[...]"


def token_ids(vocab_size: int, length: int, seed: int) -> torch.Tensor:
    """The seeded token ids every runtime sees: [1, length] uniform over the vocabulary."""
    return torch.randint(0, vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))


def run_verification(opts: VerifyOptions) -> VerifyReport:
    """Run the whole parity matrix and return the report (no files written here)."""
    src = Path(opts.src)
    device = resolve_device(opts.device)
    checkpoint = open_checkpoint(src)  # refuses pickle-only, truncated or lying weights before any runtime reads them
    spec, spec_source = truth_spec(checkpoint, opts.reference_spec)
    geo = checkpoint.geometry
    vocab = geo.vocab_size
    l_orig, max_pos = spec.original_max_position_embeddings, spec.max_position_embeddings
    explicit_cases = (parse_lengths(opts.lengths, l_orig, max_pos, opts.allow_beyond_max)  # checked before loading
                      if opts.lengths else None)
    context = TargetContext(checkpoint=checkpoint, spec=spec, device=device, dtype=opts.dtype)
    targets = [open_target(request, context) for request in opts.targets]
    ref_dtype = REFERENCE_DTYPES[opts.reference_dtype] if opts.reference_dtype else None
    reference = ReferenceRunner(checkpoint, spec, device, ref_dtype)
    cases = explicit_cases or default_cases(l_orig, max_pos, device == "cuda", reference.max_tokens_in_memory())
    report = VerifyReport(
        src=str(src), device=device, dtype=opts.dtype, seed=opts.seed, cache_semantics=CACHE_SEMANTICS,
        reference={"dtype": str(reference.dtype).removeprefix("torch."), "device": device, "spec_source": spec_source,
                   "l_orig": l_orig, "max_positions": max_pos, "attention_factor": spec.attention_factor},
        tool_version=__version__,
    )
    ids = token_ids(vocab, max(c.length for c in cases), opts.seed)
    log.info("verify %s on %s: %d case(s) x %d target(s); reference %s", src, device, len(cases), len(targets),
             report.reference["dtype"])
    try:
        with tqdm(total=len(cases) * len(targets), desc="verify", unit="run", disable=None if opts.progress else True,
                  leave=False) as bar:
            for case in cases:
                _run_case(case, ids[:, :case.length], vocab, targets, reference, opts.tolerances, report, bar)
    finally:
        for target in targets:
            target.close()
    return report


def _run_case(case: Case, ids: torch.Tensor, vocab: int, targets: list[Target], reference: ReferenceRunner,
              overrides: tuple[Override, ...], report: VerifyReport, bar) -> None:
    keep = case.compared_positions(vocab)
    truth = _CaseTruth(case, ids, keep, reference)
    for target in targets:
        bar.set_postfix_str(f"{target.kind} @ {case.label}")
        report.results.append(_run_target(case, ids, keep, target, truth, overrides))
        bar.update(1)
    report.cases.append(CaseInfo(case.name, case.label, case.prefill, case.steps, case.length, keep,
                                 truth.labels(), round(truth.seconds, 4)))


class _CaseTruth:
    """Reference logits for one case, computed once per factor set the targets ask for."""

    def __init__(self, case: Case, ids: torch.Tensor, keep: int, reference: ReferenceRunner):
        self.case, self.ids, self.keep, self.reference = case, ids, keep, reference
        self.by_set: dict[str, torch.Tensor] = {}
        self.seconds = 0.0
        self.decode_label = ""

    def logits(self, which: FactorSet | None) -> tuple[torch.Tensor, str]:
        """Prefill: logits with `which`; decode (which=None): the cached steps, each with its own set."""
        key = which.value if which is not None else "decode"
        if key not in self.by_set:
            start = time.perf_counter()
            try:
                if which is None:
                    logits, sets = self.reference.decode_logits(self.ids, self.case.prefill)
                    self.decode_label = decode_set_label(sets)
                else:
                    logits = self.reference.prefill_logits(self.ids, which, self.keep)
            except torch.cuda.OutOfMemoryError:
                raise MemoryBudgetError(
                    f"the reference at {self.case.length} tokens does not fit in GPU memory; pass shorter "
                    "--lengths or --reference-dtype float32") from None
            self.seconds += time.perf_counter() - start
            self.by_set[key] = logits
        return self.by_set[key], (self.decode_label if which is None else key)

    def labels(self) -> list[str]:
        return [self.decode_label if k == "decode" else k for k in self.by_set]


def _run_target(case: Case, ids: torch.Tensor, keep: int, target: Target, truth: _CaseTruth,
                overrides: tuple[Override, ...]) -> CaseResult:
    result = CaseResult(target=target.name, kind=target.kind, precision=target.precision, artifact=target.path,
                        case=case.name, label=case.label, length=case.length, status=SKIP)
    reason = target.skip_reason(case)
    if reason:
        result.note = reason
        return result
    ref, ref_set = truth.logits(None if case.is_decode else target.expected_set(case))
    result.reference_set = ref_set
    start = time.perf_counter()
    try:
        out = target.run(case, ids, keep)
        result.seconds = round(time.perf_counter() - start, 4)
        comparison = compare_logits(ref, out.logits)  # ValueError when the shapes differ
    except LongRopeError:
        raise
    except Exception as exc:  # a runtime crashing on an artifact is a failed check, not a crash of verify
        log.debug("%s failed on %s", target.name, case.label, exc_info=True)
        result.status, result.failures = ERROR, [f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"]
        return result
    tol = tolerance_for(target.kind, target.precision, overrides).at_length(case.length)
    result.factor_set, result.note = out.factor_set, out.note
    result.metrics, result.tolerance = comparison.as_dict(), tol.as_dict()
    result.failures = failures(tol, comparison.relative_l2, comparison.mean_kl, comparison.top1_agreement,
                               comparison.max_abs_diff)
    if out.factor_set != ref_set:
        result.failures.append(f"target used {out.factor_set} factors, reference {ref_set}")
    result.status = FAIL if result.failures else PASS
    return result
