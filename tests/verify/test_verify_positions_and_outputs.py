"""Compared positions spread over head, L_orig and tail; worst position, --plot and --write-card."""

import json

import pytest
from longrope_convert.convert.cli import main
from longrope_convert.verify import cases as cases_module
from longrope_convert.verify.runner import VerifyOptions, run_verification

from ..conftest import tree_digest


def test_long_case_compares_head_switch_and_tail_within_the_budget(llama_model, monkeypatch):
    monkeypatch.setattr(cases_module, "LOGIT_ELEMENT_BUDGET", 512 * 90)  # 90 positions of a 512 vocabulary
    report = run_verification(VerifyOptions(src=llama_model.baked, lengths="600", device="cpu", progress=False))
    case, (row,) = report.cases[0], report.results
    assert case.position_ranges == [[0, 30], [241, 271], [570, 600]] and case.compared_positions == 90
    assert row.status == "pass" and row.metrics["positions"] == 90
    assert any(a <= row.metrics["worst_position"] < b for a, b in case.position_ranges)
    assert set(case.precision_floor) == {"long"} and case.precision_floor["long"]["rel_l2"] < 1e-4


def test_plot_and_model_card(llama_model, tmp_path, capsys):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(llama_model.baked, src)
    (src / "README.md").write_text("# my model\n\nintro\n")
    weights = {k: v for k, v in tree_digest(src).items() if k not in ("README.md",)}
    png = tmp_path / "errors.png"
    for extra in ([], ["--force"]):  # the second run replaces the section instead of appending another
        with pytest.raises(SystemExit) as exit_info:
            main(["verify", str(src), "--lengths", "200,300", "--plot", str(png), "--write-card", *extra])
        assert exit_info.value.code == 0
    with pytest.raises(SystemExit) as exit_info:  # an existing plot is not replaced without --force
        main(["verify", str(src), "--lengths", "200", "--plot", str(png)])
    assert exit_info.value.code == 2 and "pass --force" in capsys.readouterr().err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    card = (src / "README.md").read_text()
    assert card.startswith("# my model\n\nintro\n") and card.count("## LongRoPE parity") == 1
    assert "all checks pass" in card and "300" in card
    data = json.loads((src / "verify.json").read_text())
    assert data["passed"] is True and [c["label"] for c in data["cases"]] == ["200", "300"]
    after = tree_digest(src)
    assert {k: v for k, v in after.items() if k in weights} == weights  # weights and config untouched
