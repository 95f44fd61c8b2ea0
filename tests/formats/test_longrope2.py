"""LongRoPE2's shape (closed form a^(i/d_c) below the critical dimension, searched above) and the mscale warning."""

from __future__ import annotations

import logging

import pytest
from longrope_convert.convert.inspect_report import factor_file_report
from longrope_convert.formats.factor_files import looks_like_mscale, read_factor_file, warn_on_unusual
from longrope_convert.formats.longrope2 import closed_form_prefix, fit_longrope2


def published_shape(scale: float, critical_dim: int, pairs: int, digits: int = 4) -> tuple[float, ...]:
    """Shaped like the published sets: a rounded closed-form prefix, then larger, jittery searched values."""
    prefix = [round(v, digits) for v in closed_form_prefix(scale, critical_dim)]
    searched = [round(scale * (1.08 + 0.9 * k / pairs) + 0.37 * ((7 * k) % 5), digits)
                for k in range(pairs - critical_dim)]
    return tuple(prefix + searched)


@pytest.mark.parametrize("scale, critical_dim, pairs", [
    (21.81, 33, 64),  # LLaMA3-8B 8192 -> 131072 (theta 5e5)
    (32.03, 31, 48),  # Phi-4-mini
])
def test_published_shapes_are_recognised(scale, critical_dim, pairs):
    factors = published_shape(scale, critical_dim, pairs)
    fit = fit_longrope2(factors)
    assert fit is not None
    assert fit.critical_dim == critical_dim
    assert fit.scale == pytest.approx(scale, rel=2e-4)
    assert fit.max_rel_error < 1e-4  # rounding to 4 decimals only
    assert f"critical dimension {critical_dim}" in fit.describe()


def test_unrounded_closed_form_fits_exactly():
    fit = fit_longrope2(tuple(closed_form_prefix(21.81, 33)) + (30.0, 31.5, 29.0, 40.0))
    assert (fit.critical_dim, round(fit.scale, 10)) == (33, 21.81) and fit.max_rel_error < 1e-12


@pytest.mark.parametrize("factors, why", [
    ((1.0,) * 64, "plain RoPE"),
    (tuple(32.0 ** (i / 63) for i in range(64)), "closed form over every dim: NTK-like, nothing searched"),
    ((1.0,) * 20 + tuple(1.0 + 1.5 * k for k in range(44)), "a run of ones then a linear rise (LongRoPE v1-like)"),
    (tuple(1.07 * 1.1 ** i for i in range(48)), "first factor is not 1"),
    ((1.0, 2.0, 3.0), "too short"),
])
def test_other_shapes_are_not_longrope2(factors, why):
    assert fit_longrope2(factors) is None, why


def test_real_longrope_v1_files_are_not_longrope2(shared_factors):
    for path in sorted(shared_factors.iterdir()):
        contents = read_factor_file(path)
        for values in (contents.unnamed, contents.long, contents.short):
            if values is not None:
                assert fit_longrope2(values) is None, path.name
        assert "LongRoPE2 shape: no" in factor_file_report(path)


def test_inspect_reports_the_critical_dimension(tmp_path):
    path = tmp_path / "llama3_long.csv"
    path.write_text("".join(f"{v:.18e}\n" for v in published_shape(21.81, 33, 64)))
    report = factor_file_report(path)
    assert "critical dimension 33" in report and "implied scale 21.81" in report


def test_mscale_like_file_warns_but_rope_sets_do_not(shared_factors, caplog):
    mscale = tuple(1.19 + 0.001 * i for i in range(48))  # an attention factor pasted per dimension
    with caplog.at_level(logging.WARNING):
        warnings = warn_on_unusual(mscale, "mscale.csv", "long factors", 32.0)
    assert any("mscale" in w for w in warnings) and "mscale" in caplog.text
    assert looks_like_mscale(tuple(0.95 + 0.003 * i for i in range(32)))
    assert not looks_like_mscale((1.0,) * 48)  # LongRoPE2's plain short set
    assert not looks_like_mscale(tuple(1.0 + 0.3 * (i / 31) ** 3 for i in range(32)))  # a short set rising 30%
    for path in sorted(shared_factors.iterdir()):
        contents = read_factor_file(path)
        for values in (contents.unnamed, contents.long, contents.short):
            if values is not None:
                assert not looks_like_mscale(values), path.name
