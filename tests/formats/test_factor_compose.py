"""`factors compose`: the per-dimension product of progressive-extension stages, written so it reads back exactly."""

from __future__ import annotations

import json
import math

import pytest
from longrope_convert.formats.factor_compose import compose_factor_files, compose_factors
from longrope_convert.formats.factor_files import read_factor_file

from ..conftest import cli_result as run_cli

STAGE1 = tuple(1.0 + 0.37 * i + 1e-9 * i * i for i in range(8))  # digits that %.6g would lose
STAGE2 = tuple(1.0 + 0.05 * (i % 3) for i in range(8))


@pytest.fixture()
def stages(tmp_path):
    """Stage 1 in the search's one-value-per-line layout, stage 2 as an HF config excerpt (its long set)."""
    one = tmp_path / "stage1_256k.csv"
    one.write_text("".join(f"{v:.18e}\n" for v in STAGE1))
    two = tmp_path / "stage2_2048k.json"
    two.write_text(json.dumps({"rope_scaling": {"type": "longrope", "long_factor": list(STAGE2),
                                                "short_factor": [1.0] * 8}}))
    return one, two


def test_compose_is_the_per_dimension_product():
    product = compose_factors([STAGE1, STAGE2, (2.0,) * 8])
    assert product == tuple(a * b * 2.0 for a, b in zip(STAGE1, STAGE2))
    assert product[4] == pytest.approx((1.0 + 0.37 * 4 + 16e-9) * 1.05 * 2.0, rel=1e-15)


def test_cli_writes_the_product_that_reads_back_exactly(stages, tmp_path, capsys):
    out = tmp_path / "composed.csv"
    code, stdout, _ = run_cli(["factors", "compose", *stages, "-o", out], capsys)
    assert code == 0
    expected = tuple(a * b for a, b in zip(STAGE1, STAGE2))
    assert read_factor_file(out).unnamed == expected  # %.18e round-trips float64 exactly
    assert out.read_text().splitlines()[1] == f"{expected[1]:.18e}"
    rows = [line.split() for line in stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    assert len(rows) == 8
    assert [float(x) for x in rows[2][1:]] == pytest.approx([STAGE1[2], STAGE2[2], expected[2]], rel=1e-5)
    assert "stage 2: " in stdout and "product" in stdout


def test_cli_json_output_round_trips(stages, tmp_path, capsys):
    out = tmp_path / "composed.json"
    code, _, _ = run_cli(["factors", "compose", *stages, "-o", out, "--json"], capsys)
    assert code == 0
    assert json.loads(out.read_text()) == [a * b for a, b in zip(STAGE1, STAGE2)]
    assert read_factor_file(out).unnamed == compose_factor_files(list(stages)).product


def test_dry_run_prints_the_table_and_writes_nothing(stages, tmp_path, capsys):
    code, stdout, _ = run_cli(["factors", "compose", *stages, "--dry-run"], capsys)
    assert code == 0 and "product" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in stages)


def test_length_mismatch_is_one_line_exit_2(stages, tmp_path, capsys):
    short = tmp_path / "stage_48.csv"
    short.write_text("1.0\n" * 6)
    out = tmp_path / "out.csv"
    code, _, err = run_cli(["factors", "compose", stages[0], short, "-o", out], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "has 6 factors but stage 1" in err and "has 8" in err
    assert not out.exists()


def test_bad_stage_values_are_refused_like_any_factor_file(stages, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("1.0\n" * 7 + "-2.0\n")
    code, _, err = run_cli(["factors", "compose", stages[0], bad, "-o", tmp_path / "o.csv"], capsys)
    assert code == 2 and "must be > 0" in err


def test_existing_output_needs_force_and_inputs_are_never_outputs(stages, tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    code, _, err = run_cli(["factors", "compose", *stages, "-o", out], capsys)
    assert code == 2 and "--force" in err and out.read_text() == "old\n"
    code, _, _ = run_cli(["factors", "compose", *stages, "-o", out, "--force"], capsys)
    assert code == 0 and math.isclose(read_factor_file(out).unnamed[3], STAGE1[3] * STAGE2[3], rel_tol=0)
    before = stages[0].read_bytes()
    code, _, err = run_cli(["factors", "compose", *stages, "-o", stages[0], "--force"], capsys)
    assert code == 2 and "same path as the input" in err and stages[0].read_bytes() == before


def test_one_stage_is_a_usage_error(stages, tmp_path, capsys):
    code, _, err = run_cli(["factors", "compose", stages[0], "-o", tmp_path / "o.csv"], capsys)
    assert code == 2 and "at least two" in err


def test_real_llama2_files_compose(shared_factors, tmp_path):
    """The published LLaMA2 set in both layouts (one vector, and 32 identical per-layer rows): the square."""
    one = shared_factors / "longrope-llama2-7b-128k.result_final.csv"
    rows = shared_factors / "longrope-llama2-7b-128k.per-layer.csv"
    composed = compose_factor_files([one, rows])
    assert len(composed.product) == 64
    assert composed.product[0] == 1.0 and composed.product[-1] == pytest.approx(1024.0)


def test_inspect_of_several_stage_files_shows_each_stage_and_the_product(tmp_path, capsys):
    stage1, stage2 = tmp_path / "s1.csv", tmp_path / "s2.csv"
    stage1.write_text("".join(f"{1 + i:.18e}\n" for i in range(8)))
    stage2.write_text("".join(f"{2.0:.18e}\n" for _ in range(8)))
    code, out, _ = run_cli(["inspect", stage1, stage2], capsys)
    assert code == 0
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [float(r[-1]) for r in rows] == [2.0 * (1 + i) for i in range(8)]
    assert "stage 1" in out and "product" in out
