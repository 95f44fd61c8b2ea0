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
from ..formats.artifact_spec import reference_spec as read_reference_spec
from ..formats.errors import ConfigError, LongRopeError
from ..formats.hf.checkpoint import Checkpoint, open_checkpoint
from ..formats.spec import LongRopeSpec
from ..formats.spec_inputs import with_start_tokens
from .case_truth import (
    CaseTruth,
    TruthRunners,
    TruthStore,
    truth_groups,
    truth_key,
)
from .cases import Case, default_cases, parse_lengths, positions_in
from .device_map import layer_devices, parse_device_map
from .metrics import compare_logits
from .reference_run import CACHE_SEMANTICS, ReferenceRunner
from .report import (
    ERROR,
    FAIL,
    PASS,
    SKIP,
    CaseInfo,
    CaseResult,
    VerifyReport,
    join_notes,
)
from .routing_flips import excluding_routing_flips
from .targets import Target, TargetContext, TargetRequest, open_target
from .tolerances import Override, failures, tolerance_for

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
REFERENCE_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class DeviceError(LongRopeError):
    """--device cuda without a CUDA device."""


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
    precision_floor: bool = True  # derive tolerances from each case's float32 floor as well as the table
    device_map: str | None = None  # "auto" | "balanced" | "sequential" | a JSON file (verify/device_map.py)
    allow_beyond_max: bool = False  # let --lengths go past the spec's max_position_embeddings
    start_tokens: int | None = None  # LongRoPE v1 n_hat for the truth (None: the spec's own, 0 for any config)


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
    spec = read_reference_spec(reference_spec, own)  # a checkpoint, its config.json, or a factor excerpt
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
    spec = with_start_tokens(spec, opts.start_tokens)  # positions < n_hat: plain RoPE in the truth
    geo = checkpoint.geometry
    vocab = geo.vocab_size
    l_orig, max_pos = spec.original_max_position_embeddings, spec.max_position_embeddings
    explicit_cases = (parse_lengths(opts.lengths, l_orig, max_pos, opts.allow_beyond_max)  # checked before loading
                      if opts.lengths else None)
    device_map = parse_device_map(opts.device_map)
    context = TargetContext(checkpoint=checkpoint, spec=spec, device=device, dtype=opts.dtype, device_map=device_map)
    targets = [open_target(request, context) for request in opts.targets]
    ref_dtype = REFERENCE_DTYPES[opts.reference_dtype] if opts.reference_dtype else None
    devices = layer_devices(geo.num_layers, device, device_map)
    reference = ReferenceRunner(checkpoint, spec, device, ref_dtype, devices)
    runners = TruthRunners(reference, _floor_runner(checkpoint, spec, device, reference, opts.precision_floor,
                                                    devices))
    cases = explicit_cases or default_cases(l_orig, max_pos, device == "cuda", reference.max_tokens_in_memory())
    report = VerifyReport(
        src=str(src), device=device, dtype=opts.dtype, seed=opts.seed, cache_semantics=CACHE_SEMANTICS,
        reference={"dtype": str(reference.dtype).removeprefix("torch."), "device": device, "spec_source": spec_source,
                   "l_orig": l_orig, "max_positions": max_pos, "attention_factor": spec.attention_factor},
        tool_version=__version__,
    )
    log.info(reference_estimate(checkpoint, reference.dtype, cases))
    ids = token_ids(vocab, max(c.length for c in cases), opts.seed)
    positions = {case: positions_in(case.position_ranges(vocab, l_orig)) for case in cases}
    store = TruthStore(runners, ids, positions, truth_groups(cases, targets))
    log.info("verify %s on %s: %d case(s) x %d target(s); reference %s", src, device, len(cases), len(targets),
             report.reference["dtype"])
    try:
        with tqdm(total=len(cases) * len(targets), desc="verify", unit="run", disable=None if opts.progress else True,
                  leave=False) as bar:
            for case in cases:
                _run_case(case, ids[:, :case.length], vocab, targets, store, opts.tolerances, report, bar)
    finally:
        for target in targets:
            target.close()
    return report


def reference_estimate(checkpoint: Checkpoint, dtype: torch.dtype, cases: list[Case]) -> str:
    """What the truth will cost: weights plus the longest case's KV cache, and the forward FLOPs of all cases
    (2 x params per token, plus causal attention's 2 x layers x heads x head_dim x T^2)."""
    g = checkpoint.geometry
    itemsize = torch.empty((), dtype=dtype).element_size()
    params = checkpoint.parameter_count
    longest = max(c.length for c in cases)
    cache = g.kv_cache_bytes(longest, itemsize)
    flops = sum(2 * params * c.length + 2 * g.num_layers * g.num_heads * g.head_dim * c.length**2 for c in cases)
    return (f"reference ({str(dtype).removeprefix('torch.')}): ~{(params * itemsize + cache) / 2**30:.1f} GiB "
            f"(weights + KV cache at {longest} tokens), ~{flops / 1e12:.2f} TFLOP over {len(cases)} case(s)")


def _floor_runner(checkpoint: Checkpoint, spec: LongRopeSpec, device: str, reference: ReferenceRunner,
                  wanted: bool, devices: list[str]) -> ReferenceRunner | None:
    """A float32 reference (float32 angles, as transformers and llama.cpp form them) for the precision floor;
    none when the truth itself is float32 or the floor is turned off."""
    if not wanted or reference.dtype != torch.float64:
        return None
    return ReferenceRunner(checkpoint, spec, device, torch.float32, devices)


def _run_case(case: Case, ids: torch.Tensor, vocab: int, targets: list[Target], store: TruthStore,
              overrides: tuple[Override, ...], report: VerifyReport, bar) -> None:
    ranges = case.position_ranges(vocab, store.runners.reference.spec.original_max_position_embeddings)
    positions = store.positions[case]
    truth = CaseTruth(case, store)
    for target in targets:
        bar.set_postfix_str(f"{target.kind} @ {case.label}")
        report.results.append(_run_target(case, ids, positions, target, truth, overrides, report))
        bar.update(1)
    report.cases.append(CaseInfo(case.name, case.label, case.prefill, case.steps, case.length, len(positions),
                                 truth.labels(), round(truth.seconds, 4), [list(r) for r in ranges],
                                 truth.floor_dicts(), truth.tokens))
    log.info("case %s (%s): reference %.1f s; %s", case.label, case.name, truth.seconds,
             ", ".join(f"{r.target} {r.status}" for r in report.results if r.label == case.label))


def _run_target(case: Case, ids: torch.Tensor, positions: torch.Tensor, target: Target, truth: CaseTruth,
                overrides: tuple[Override, ...], report: VerifyReport) -> CaseResult:
    result = CaseResult(target=target.name, kind=target.kind, precision=target.precision, artifact=target.path,
                        case=case.name, label=case.label, length=case.length, status=SKIP)
    reason = target.skip_reason(case)
    if reason:
        result.note = reason
        return result
    which, routing = key = truth_key(case, target)
    truth_logits, ref_set = truth.logits(key)
    result.reference_set = ref_set
    start = time.perf_counter()
    try:
        out = target.run(case, ids, positions)
        result.seconds = round(time.perf_counter() - start, 4)
        comparison = compare_logits(truth_logits.logits, out.logits)  # ValueError when the shapes differ
    except LongRopeError:
        raise
    except Exception as exc:  # a runtime crashing on an artifact is a failed check, not a crash of verify
        log.debug("%s failed on %s", target.name, case.label, exc_info=True)
        result.status, result.failures = ERROR, [f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"]
        return result
    tol = tolerance_for(target.kind, target.precision, overrides, case.length, truth.floor(which))
    report.curves[(target.name, case.label)] = (positions.tolist(), list(comparison.row_errors))
    judged = excluding_routing_flips(comparison, truth_logits, out.logits, positions, tol)
    result.factor_set, result.note = out.factor_set, join_notes(judged.note, out.note)
    if routing:
        result.note = join_notes(f"reference with the runtime's own MoE routing ({routing})", result.note)
    result.metrics = judged.metrics()
    result.tolerance = tol.as_dict()
    c = judged.comparison
    result.failures = failures(tol, c.relative_l2, c.mean_kl, c.top1_agreement, c.max_abs_diff)
    if out.failure:
        result.failures.append(out.failure)
    elif out.factor_set != ref_set:
        result.failures.append(f"target used {out.factor_set} factors, reference {ref_set}")
    result.status = FAIL if result.failures else PASS
    if result.failures and out.expected_divergence and not out.failure:
        # a runtime that departs from the reference by design: the row keeps its numbers and says why
        result.status, result.failures = SKIP, []
        result.note = join_notes(f"expected divergence: {out.expected_divergence}", result.note)
    return result
