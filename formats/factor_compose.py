"""Progressive LongRoPE extension: stage factor sets composed into one (the 2048k model applies a second searched
set on top of the 256k one, so its rope divides every frequency by both: the per-dimension product).

Each stage is read and validated like every factor file (formats/factor_files.py); the product is written in the
LongRoPE search's one-value-per-line `%.18e` layout (or a JSON list), both of which read back exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import FactorFileError
from .factor_files import read_factor_file, validate_factors
from .factor_set import FactorSet


class StageLengthError(FactorFileError):
    """Two stages have different numbers of factors (different rotary dims)."""


@dataclass(frozen=True)
class ComposedFactors:
    """The stages as read (one vector each, in order) and their per-dimension product."""

    paths: tuple[str, ...]
    stages: tuple[tuple[float, ...], ...]
    product: tuple[float, ...]


def compose_factors(stages: list[tuple[float, ...]]) -> tuple[float, ...]:
    """Per-dimension product of equally long factor vectors (frequency divisors multiply when stacked)."""
    return tuple(math.prod(values) for values in zip(*stages, strict=True))


def read_stage(path: Path) -> tuple[float, ...]:
    """One stage's vector: an unnamed vector, or a config file's long set (the set a progressive stage extends)."""
    values = read_factor_file(path).vector_for(FactorSet.LONG)
    if values is None:
        raise FactorFileError("holds no long_factor to compose", path)
    return values


def compose_factor_files(paths: list[Path]) -> ComposedFactors:
    """Read and validate every stage (same length as the first, finite, > 0), then multiply them."""
    stages: list[tuple[float, ...]] = []
    for path in paths:
        values = read_stage(path)
        if stages and len(values) != len(stages[0]):
            raise StageLengthError(f"has {len(values)} factors but stage 1 ({paths[0]}) has {len(stages[0])}; "
                                   "stages must cover the same rotary dim", path)
        stages.append(validate_factors(values, str(path), len(values), f"rotary dim {2 * len(values)}").values)
    return ComposedFactors(tuple(str(p) for p in paths), tuple(stages), compose_factors(stages))


def factor_lines(values: tuple[float, ...]) -> str:
    """The LongRoPE search's result_final.csv layout: one `%.18e` value per line (exact for float64)."""
    return "".join(f"{v:.18e}\n" for v in values)


def factor_json(values: tuple[float, ...]) -> str:
    """A JSON list (repr-exact floats), read back as an unnamed vector."""
    return json.dumps(list(values)) + "\n"
