"""Pass/fail limits per target kind and precision, growing with length where float32 angles drift.

The table is the documentation (docs/verify.md copies it). A limit applies at `length` tokens as
    rel_l2(length) = rel_l2 * g,   kl(length) = kl * g**2,   g = 1 + length / growth_tokens
because float32 rope angles (position x inv_freq) lose precision linearly with position (FACTS.md), and KL
grows with the square of a small logit error. top1 is a minimum agreement and does not grow;
max_abs is unchecked (None) unless set, since logit scales differ between models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from ..formats.errors import LongRopeError

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import LogitComparison

METRIC_KEYS = ("rel_l2", "kl", "top1", "max_abs", "growth_tokens")


class ToleranceError(LongRopeError):
    """--tolerance is malformed."""


FLOOR_MARGIN = 4.0  # a target may be this many times as far from the float64 truth as float32 itself is


@dataclass(frozen=True)
class Tolerance:
    rel_l2: float
    kl: float
    top1: float
    max_abs: float | None = None
    growth_tokens: float = 4096.0
    floor: dict | None = None  # the case's float32 precision floor, when it raised a limit (see with_floor)

    def at_length(self, length: int) -> "Tolerance":
        """The limits for a case covering `length` tokens (see the module docstring)."""
        g = 1.0 + length / self.growth_tokens if self.growth_tokens > 0 else 1.0
        return replace(self, rel_l2=self.rel_l2 * g, kl=self.kl * g * g)

    def with_floor(self, floor: "LogitComparison | None", keep: frozenset[str] = frozenset()) -> "Tolerance":
        """Limits no tighter than FLOOR_MARGIN x what a float32 computation in the runtimes' order of operations
        (float32 angles, as transformers and llama.cpp form them) costs on this very case: an exact conversion of
        a sharp model at 16k+ tokens is as far from the truth as float32 rope itself, and must pass."""
        if floor is None:
            return self
        raised = {
            "rel_l2": max(self.rel_l2, FLOOR_MARGIN * floor.relative_l2),
            "kl": max(self.kl, FLOOR_MARGIN**2 * floor.mean_kl),
            "top1": min(self.top1, max(0.0, 1.0 - FLOOR_MARGIN * (1.0 - floor.top1_agreement))),
        }
        measured = {"rel_l2": floor.relative_l2, "kl": floor.mean_kl, "top1": floor.top1_agreement,
                    "margin": FLOOR_MARGIN}
        return replace(self, **{k: v for k, v in raised.items() if k not in keep}, floor=measured)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# (target kind, precision) -> base limits. Measured on the tiny test models (docs/verify.md): float32 targets
# agree with the float64 reference to ~1e-6 relative; the limits leave ~100x headroom and still catch a swapped
# factor set (~1e-1) or a wrong attention factor (~1e-1).
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("transformers", "float32"): Tolerance(rel_l2=1e-4, kl=1e-6, top1=0.99),
    ("transformers", "float16"): Tolerance(rel_l2=1e-2, kl=1e-3, top1=0.95),
    ("transformers", "bfloat16"): Tolerance(rel_l2=5e-2, kl=1e-2, top1=0.90),
    ("gguf", "f32"): Tolerance(rel_l2=1e-3, kl=1e-5, top1=0.99),
    ("gguf", "f16"): Tolerance(rel_l2=1e-2, kl=1e-3, top1=0.95),
    ("gguf", "bf16"): Tolerance(rel_l2=5e-2, kl=1e-2, top1=0.90),
    ("gguf", "q8_0"): Tolerance(rel_l2=5e-2, kl=1e-2, top1=0.90),
    # llama.cpp's quantizer (hf-to-gguf --outtype q6_k/q5_k_m/q4_k_m/q4_0), measured on tiny random models with
    # 256-wide rows (docs/gguf.md; random weights are the worst case for 4-6 bit blocks): max over 4 archs and
    # 200-600 tokens, at g=1, of rel_l2 / kl / min top1: q6_k 0.042/0.010/0.91, q5_k_m 0.073/0.031/0.81,
    # q4_k_m 0.137/0.108/0.72, q4_0 0.171/0.167/0.66. Limits ~1.6x (rel_l2) and ~2.3x (kl) over that for q6_k and
    # q5_k_m; for q4 the margin is ~1.3x rel_l2 / ~1.4x kl, the most that still fails swapped factor sets
    # (measured 0.20-0.25 rel_l2, 0.22-0.37 kl at every length).
    ("gguf", "q6_k"): Tolerance(rel_l2=7e-2, kl=2.5e-2, top1=0.85),
    ("gguf", "q5_k_m"): Tolerance(rel_l2=1.2e-1, kl=7e-2, top1=0.75),
    ("gguf", "q4_k_m"): Tolerance(rel_l2=1.8e-1, kl=1.5e-1, top1=0.65),
    ("gguf", "q4_0"): Tolerance(rel_l2=2.1e-1, kl=2.4e-1, top1=0.60),
    ("gguf", "quantized"): Tolerance(rel_l2=2e-1, kl=1e-1, top1=0.70),
    ("onnx", "fp32"): Tolerance(rel_l2=1e-4, kl=1e-6, top1=0.99),
    ("onnx", "fp16"): Tolerance(rel_l2=1e-2, kl=1e-3, top1=0.95),
    # export-onnx --dtype int4 (onnxruntime MatMulNBits, block 32, symmetric, accuracy level 4), measured on the
    # tiny random demo models (docs/onnx.md): max over 4 archs and 200-600 tokens, at g=1, rel_l2 0.165, kl 0.150,
    # min top1 0.685 (like gguf q4_0). Margin ~1.3x rel_l2 / ~1.4x kl, so a graph frozen at the wrong set
    # (int4 on top of a swapped set) still fails.
    ("onnx", "int4"): Tolerance(rel_l2=2.1e-1, kl=2.1e-1, top1=0.60),
}
FALLBACK = Tolerance(rel_l2=2e-1, kl=1e-1, top1=0.70)  # an unknown precision: only gross errors fail


@dataclass(frozen=True)
class Override:
    """`[KIND[/PRECISION].]METRIC=VALUE` from --tolerance."""

    kind: str | None
    precision: str | None
    metric: str
    value: float

    def matches(self, kind: str, precision: str) -> bool:
        return (self.kind is None or self.kind == kind) and (self.precision is None or self.precision == precision)


def parse_override(text: str) -> Override:
    """Parse one --tolerance argument, e.g. `rel_l2=1e-3`, `gguf.kl=1e-4`, `gguf/f16.top1=0.9`."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise ToleranceError(f"--tolerance {text!r}: expected [KIND[/PRECISION].]METRIC=VALUE")
    scope, _, metric = key.strip().rpartition(".")
    if metric not in METRIC_KEYS:
        raise ToleranceError(f"--tolerance {text!r}: metric must be one of {', '.join(METRIC_KEYS)}")
    try:
        value = float(raw)
    except ValueError:
        raise ToleranceError(f"--tolerance {text!r}: {raw.strip()!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ToleranceError(f"--tolerance {text!r}: the value must be finite and >= 0")
    kind, _, precision = scope.partition("/")
    return Override(kind or None, precision or None, metric, value)


def tolerance_for(kind: str, precision: str, overrides: tuple[Override, ...] = (), length: int | None = None,
                  floor: "LogitComparison | None" = None) -> Tolerance:
    """The limits for a target: the table's with matching overrides applied in order (later wins), grown to
    `length` when given and raised to the case's precision floor (never a metric the user overrode)."""
    tol = TOLERANCES.get((kind, precision), FALLBACK)
    chosen = set()
    for o in overrides:
        if o.matches(kind, precision):
            tol = replace(tol, **{o.metric: o.value})
            chosen.add(o.metric)
    if length is None:
        return tol
    return tol.at_length(length).with_floor(floor, keep=frozenset(chosen))


def failures(tol: Tolerance, rel_l2: float, kl: float, top1: float, max_abs: float) -> list[str]:
    """Human-readable reasons a comparison is outside `tol` (empty when it passes); NaN always fails."""
    out = []
    if not rel_l2 <= tol.rel_l2:
        out.append(f"rel_l2 {rel_l2:.3g} > {tol.rel_l2:.3g}")
    if not kl <= tol.kl:
        out.append(f"kl {kl:.3g} > {tol.kl:.3g}")
    if not top1 >= tol.top1:
        out.append(f"top1 {top1:.3f} < {tol.top1:.3f}")
    if tol.max_abs is not None and not max_abs <= tol.max_abs:
        out.append(f"max_abs {max_abs:.3g} > {tol.max_abs:.3g}")
    return out
