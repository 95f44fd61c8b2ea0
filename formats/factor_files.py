"""Reading searched LongRoPE factors from every layout found in the wild (FACTS.md "Factor file layouts").

1. one float per line (the LongRoPE search's result_final.csv);
2. a per-layer comma matrix (identical rows collapse to one vector; differing rows are refused);
3. search intermediates with 1 (n_hat) or 2 (piecewise dims) leading values, only with `strip_search_prefix`;
4. HF config.json or an excerpt (`rope_scaling`/`rope_parameters`, type `longrope` or legacy `su`);
5. a JSON list, or `.npy` (loaded without pickle).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import FactorFileError
from .factor_set import FactorSet
from .hf.rope_keys import positions, rope_theta
from .json_io import parse_json, read_bounded

log = logging.getLogger(__name__)

MAX_FACTOR_FILE_BYTES = 1024 * 1024  # real files are 2-130 KB (a 100-layer x 64 matrix)
MAX_VALUES = 65536
# The GGUF stores factors as F32: a value outside float32's normal range would become inf or 0 (or lose
# precision as a denormal) there, so the same bounds hold for every output.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_MIN_NORMAL = 1.1754943508222875e-38
# A plain decimal number as the LongRoPE search writes it (no underscores, no hex, no commas), or nan/inf
# (parsed, then refused by validate_factors as not finite with its own message).
STRICT_NUMBER = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE)
DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


@dataclass(frozen=True)
class FactorFileContents:
    """What one file holds: an unnamed vector, or named long/short sets (config files)."""

    path: str
    unnamed: tuple[float, ...] | None = None
    long: tuple[float, ...] | None = None
    short: tuple[float, ...] | None = None
    # context lengths a config excerpt carries beside its factors (None: the file does not say)
    original_max_position_embeddings: int | None = None
    max_position_embeddings: int | None = None
    rope_theta: float | None = None

    def vector_for(self, which: FactorSet) -> tuple[float, ...] | None:
        if self.unnamed is not None:
            return self.unnamed
        return self.long if which is FactorSet.LONG else self.short


@dataclass(frozen=True)
class ValidatedFactors:
    values: tuple[float, ...]
    start_tokens: int = 0


def read_factor_file(path: str | Path) -> FactorFileContents:
    """Parse a factor file of any supported layout (no validation of length or values yet)."""
    path = Path(path)
    data = _read_bounded(path)
    if path.suffix.lower() == ".npy":
        return FactorFileContents(str(path), unnamed=_parse_npy(path, data))
    text = _decode(path, data)
    stripped = text.lstrip()
    if stripped.startswith("{") or stripped.startswith("["):
        return _parse_json(path, text)
    return FactorFileContents(str(path), unnamed=_parse_text(path, text))


def _read_bounded(path: Path) -> bytes:
    data = read_bounded(path, FactorFileError, MAX_FACTOR_FILE_BYTES, "factor files")
    if not data.strip():
        raise FactorFileError("file is empty", path)
    return data


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FactorFileError("not a text file (expected numbers, JSON or .npy)", path) from None


def _parse_float(token: str, path: Path, where: str) -> float:
    """One number, strictly: Python's float() also takes `1_5`, which no factor file means."""
    if not STRICT_NUMBER.fullmatch(token):
        raise FactorFileError(f"{where}: {token[:40]!r} is not a number", path)
    return float(token)


def _parse_text(path: Path, text: str) -> tuple[float, ...]:
    """One value per line, or a comma/whitespace matrix with one row per layer."""
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    _refuse_decimal_commas(path, lines)
    rows: list[list[float]] = []
    for lineno, line in lines:
        tokens = [t for t in line.replace(",", " ").split()]
        rows.append([_parse_float(t, path, f"line {lineno}") for t in tokens])
        if len(rows) > MAX_VALUES:
            raise FactorFileError(f"more than {MAX_VALUES} rows; not a factor file", path)
    if not rows:
        raise FactorFileError("file holds no numbers", path)
    if all(len(r) == 1 for r in rows):
        return tuple(r[0] for r in rows)
    return _collapse_matrix(path, rows)


def _refuse_decimal_commas(path: Path, lines: list[tuple[int, str]]) -> None:
    """`1,1 1,2` (a locale's decimal commas) would otherwise read as a matrix of integers. A file is taken for
    decimal commas when it has no '.' at all and every line holds several `digits,digits` fields separated by
    whitespace or semicolons. (A comma matrix has no such separators; `1,2` alone on a line stays a row.)"""
    if not lines or any("." in line for _, line in lines):
        return
    for _, line in lines:
        fields = re.split(r"[\s;]+", line)
        if len(fields) < 2 or not all(DECIMAL_COMMA.match(f) for f in fields):
            return
    lineno, line = lines[0]
    raise FactorFileError(f"line {lineno}: {line.split()[0][:40]!r} looks like a decimal comma: use '.'", path)


def _collapse_matrix(path: Path, rows: list[list[float]]) -> tuple[float, ...]:
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise FactorFileError(f"ragged matrix: rows have {sorted(widths)} values; every layer row must be the same length", path)
    first = rows[0]
    for i, row in enumerate(rows[1:], start=2):
        if any(not _same(a, b) for a, b in zip(first, row)):
            raise FactorFileError(
                f"per-layer matrix row {i} differs from row 1; per-layer factors cannot be expressed in HF or GGUF", path
            )
    if len(rows) > 1:
        log.info("%s: %d identical per-layer rows collapsed to one vector of %d", path, len(rows), len(first))
    return tuple(first)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _parse_json(path: Path, text: str) -> FactorFileContents:
    data = parse_json(text, path, FactorFileError)
    if isinstance(data, list):
        return FactorFileContents(str(path), unnamed=_json_vector(path, data, "the list"))
    if not isinstance(data, dict):
        raise FactorFileError("JSON must be a list of numbers or a config object", path)
    rope = _find_rope_dict(path, data)
    long = rope.get("long_factor")
    short = rope.get("short_factor")
    if long is None and short is None:
        raise FactorFileError("rope dict has neither long_factor nor short_factor", path)
    return FactorFileContents(
        str(path),
        long=_json_vector(path, long, "long_factor") if long is not None else None,
        short=_json_vector(path, short, "short_factor") if short is not None else None,
        **_context_lengths(path, data, rope),
    )


def _context_lengths(path: Path, data: dict, rope: dict) -> dict:
    """L_orig, max and theta a config excerpt carries (top level first, as Phi-3's config; else in the rope
    dict), checked like config.json's own."""
    found: dict = {}
    for key in ("original_max_position_embeddings", "max_position_embeddings"):
        where, value = (key, data[key]) if data.get(key) is not None else (f"rope dict's {key}", rope.get(key))
        found[key] = positions(value, where, str(path))
    theta = data.get("rope_theta") if data.get("rope_theta") is not None else rope.get("rope_theta")
    if theta is not None:
        found["rope_theta"] = rope_theta({"rope_theta": theta}, str(path))
    return found


def _find_rope_dict(path: Path, data: dict) -> dict:
    if "long_factor" in data or "short_factor" in data:
        return data
    for key in ("rope_parameters", "rope_scaling"):
        rope = data.get(key)
        if isinstance(rope, dict):
            kind = rope.get("rope_type") or rope.get("type")
            if kind not in ("longrope", "su"):
                raise FactorFileError(f"{key} has type {kind!r}, not 'longrope' or 'su'", path)
            return rope
    raise FactorFileError("JSON object has no rope_scaling/rope_parameters with long_factor/short_factor", path)


def _json_vector(path: Path, values: object, name: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not values:
        raise FactorFileError(f"{name} must be a non-empty list of numbers", path)
    if any(isinstance(v, list) for v in values):
        return _collapse_matrix(path, [[_json_number(path, x, name) for x in row] for row in values])
    return tuple(_json_number(path, v, name) for v in values)


def _json_number(path: Path, value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FactorFileError(f"{name} holds {str(value)[:40]!r}, not a number", path)
    try:
        return float(value)
    except OverflowError:  # an integer literal with hundreds of digits
        raise FactorFileError(f"{name} holds an integer too large for a float", path) from None


def _parse_npy(path: Path, data: bytes) -> tuple[float, ...]:
    import io

    import numpy as np

    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise FactorFileError(f"not a readable .npy array ({exc})", path) from None
    if array.dtype.kind not in "fiu":
        raise FactorFileError(f".npy array has dtype {array.dtype}, expected numbers", path)
    if array.ndim == 2:
        return _collapse_matrix(path, array.astype(float).tolist())
    if array.ndim != 1:
        raise FactorFileError(f".npy array has {array.ndim} dimensions, expected 1 (or 2 for per-layer rows)", path)
    return tuple(float(v) for v in array)


def validate_factors(
    values: tuple[float, ...],
    path: str,
    expected_len: int,
    derivation: str,
    strip_search_prefix: bool = False,
) -> ValidatedFactors:
    """Check length and values; strip LongRoPE search prefixes only when asked."""
    start_tokens = 0
    extra = len(values) - expected_len
    if extra in (1, 2) and strip_search_prefix:
        if extra == 1:
            start_tokens = _start_tokens(values[0], path)
        values = values[extra:]
    elif extra != 0:
        hint = ""
        if extra in (1, 2):
            what = "an n_hat start-token count" if extra == 1 else "two piecewise-dimension values"
            hint = f"; this looks like a LongRoPE search vector with {what} first: pass --strip-search-prefix"
        raise FactorFileError(f"has {len(values)} values, expected {expected_len} ({derivation} / 2){hint}", path)
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise FactorFileError(f"value {i} is {v}; factors must be finite", path)
        if v <= 0:
            raise FactorFileError(f"value {i} is {v}; factors must be > 0", path)
        if not FLOAT32_MIN_NORMAL <= v <= FLOAT32_MAX:
            kind = "overflows" if v > FLOAT32_MAX else "underflows"
            raise FactorFileError(f"value {i} is {v}, which {kind} float32 (the GGUF's factor type): factors must "
                                  f"lie in [{FLOAT32_MIN_NORMAL:.4g}, {FLOAT32_MAX:.4g}]", path)
    return ValidatedFactors(tuple(values), start_tokens)


def _start_tokens(value: float, path: str) -> int:
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise FactorFileError(f"leading n_hat start-token count {value} is not a non-negative integer", path)
    return int(value)


MSCALE_RANGE = (0.8, 1.5)  # attention factors: sqrt(1 + ln s / ln L) is 1.19 for Phi-3-mini, 1.24 for Phi-3.5-MoE
MSCALE_MAX_STEP = 0.05  # an mscale profile changes smoothly between neighbours
MSCALE_MAX_SPREAD = 1.1  # max/min: rope sets grow towards the scale (LongRoPE short sets by 30% or more)


def looks_like_mscale(values: tuple[float, ...]) -> bool:
    """Values that read like a per-dimension mscale (attention factor) vector rather than rope factors: all within
    MSCALE_RANGE, smooth, nearly flat (no growth towards the scale), and not mostly exact 1.0s (a rope set keeps
    its high frequencies at exactly 1.0; an all-ones plain short set is rope, not mscale)."""
    low, high = MSCALE_RANGE
    if not values or not all(low <= v <= high for v in values):
        return False
    mostly_plain = 2 * sum(1 for v in values if v == 1.0) > len(values)
    smooth = all(abs(b - a) <= MSCALE_MAX_STEP for a, b in zip(values, values[1:]))
    flat = max(values) <= MSCALE_MAX_SPREAD * min(values)
    return smooth and flat and not mostly_plain


def warn_on_unusual(values: tuple[float, ...], path: str, name: str, nominal_scale: float) -> list[str]:
    """Warnings (not errors) for legal but surprising factor sets; returned and logged."""
    warnings = []
    below = [v for v in values if v < 1.0]
    if below:
        warnings.append(f"{path}: {name} has {len(below)} values below 1.0 (min {min(below):.4g}): frequencies are raised")
    if any(b < a for a, b in zip(values, values[1:])):
        warnings.append(f"{path}: {name} is not monotone non-decreasing (published Mistral sets are not either)")
    above = [v for v in values if v > nominal_scale]
    if above and nominal_scale > 1:
        warnings.append(f"{path}: {name} has {len(above)} values above the nominal scale {nominal_scale:.4g} (max {max(above):.4g})")
    if looks_like_mscale(values):
        warnings.append(f"{path}: {name} look like attention (mscale) factors, not rope factors: all within "
                        f"[{min(values):.4g}, {max(values):.4g}], smooth and flat near 1, where rope factors grow "
                        "towards the scale; check that this is the right file")
    for w in warnings:
        log.warning(w)
    return warnings
