"""verify's building blocks without any model: cases, tolerances, GGUF context sizes, metrics, report files."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest
import torch
from longrope_convert.formats.factor_set import FactorSet, choose_by_context_size
from longrope_convert.verify.cases import Case, CaseSpecError, default_cases, parse_lengths
from longrope_convert.verify.report import CaseInfo, CaseResult, VerifyReport
from longrope_convert.verify.report_files import load_schema, report_json, report_junit
from longrope_convert.verify.target_llama_cpp import n_ctx_for
from longrope_convert.verify.targets import TargetError, parse_target
from longrope_convert.verify.tolerances import (
    TOLERANCES,
    Tolerance,
    ToleranceError,
    failures,
    parse_override,
    tolerance_for,
)


def test_default_cases_cover_both_sides_of_the_switch_and_a_cached_crossing():
    cpu = default_cases(256, 1024, on_gpu=False)
    assert [c.label for c in cpu] == ["128", "256", "257", "512", "255+2"]
    assert [c.length for c in cpu] == [128, 256, 257, 512, 257]
    gpu = default_cases(4096, 131072, on_gpu=True)
    assert [c.label for c in gpu] == ["2048", "4096", "4097", "32768", "131072", "4095+2"]
    # memory caps the GPU long cases too
    assert [c.label for c in default_cases(4096, 131072, True, max_tokens=50000)][3:5] == ["32768", "50000"]
    # a tiny model's max positions caps the GPU long cases (duplicates dropped)
    assert [c.label for c in default_cases(256, 1024, on_gpu=True)] == ["128", "256", "257", "1024", "255+2"]


def test_parse_lengths_names_cases_and_rejects_garbage():
    cases = parse_lengths("200, 256,257,600,255+2", 256)
    assert [(c.name, c.prefill, c.steps) for c in cases] == [
        ("short", 200, 0), ("at L_orig", 256, 0), ("L_orig+1", 257, 0), ("long", 600, 0),
        ("decode across L_orig", 255, 2)]
    assert parse_lengths("100+3", 256)[0].name == "decode"
    for bad in ("", "abc", "0", "5+0", "12,-3", "1.5"):
        with pytest.raises(CaseSpecError) as err:
            parse_lengths(bad, 256)
        assert err.value.exit_code == 2


def test_compared_positions_stay_within_the_logit_budget():
    assert Case("long", 600).compared_positions(512) == 600
    assert Case("long", 131072).compared_positions(512) == 32768  # 2**24 / 512
    assert Case("long", 131072).compared_positions(32064) == 523
    assert Case("d", 255, 2).compared_positions(32064) == 2


def test_tolerances_grow_with_length_and_overrides_apply_by_scope():
    base = tolerance_for("transformers", "float32")
    assert base == TOLERANCES[("transformers", "float32")]
    at = base.at_length(4096)
    assert at.rel_l2 == pytest.approx(2 * base.rel_l2) and at.kl == pytest.approx(4 * base.kl)
    assert at.top1 == base.top1
    override = parse_override("gguf/f16.rel_l2=2e-2")
    assert tolerance_for("gguf", "f16", (override,)).rel_l2 == 2e-2
    assert tolerance_for("gguf", "f32", (override,)).rel_l2 == TOLERANCES[("gguf", "f32")].rel_l2
    everywhere = parse_override("top1=0.5")
    assert tolerance_for("onnx", "fp32", (everywhere,)).top1 == 0.5
    no_growth = tolerance_for("onnx", "fp32", (parse_override("onnx.growth_tokens=0"),)).at_length(10**6)
    assert no_growth.rel_l2 == TOLERANCES[("onnx", "fp32")].rel_l2
    for bad in ("rel_l2", "foo=1", "kl=abc", "kl=-1", "kl=nan"):
        with pytest.raises(ToleranceError):
            parse_override(bad)


def test_failures_name_each_broken_limit_and_nan_always_fails():
    tol = Tolerance(rel_l2=1e-4, kl=1e-6, top1=0.99, max_abs=1.0)
    assert failures(tol, 1e-5, 1e-8, 1.0, 0.1) == []
    assert failures(tol, 2e-4, 1e-8, 0.5, 2.0) == ["rel_l2 0.0002 > 0.0001", "top1 0.500 < 0.990", "max_abs 2 > 1"]
    assert len(failures(tol, math.nan, math.nan, math.nan, math.nan)) == 4


@pytest.mark.parametrize("length, l_orig, n_ctx, expected", [
    (200, 256, 256, FactorSet.SHORT), (256, 256, 256, FactorSet.SHORT), (257, 256, 512, FactorSet.LONG),
    (600, 256, 768, FactorSet.LONG), (1024, 256, 1024, FactorSet.LONG), (5000, 4096, 5120, FactorSet.LONG),
    # L_orig not a multiple of 256: llama.cpp pads 300 to 512 > 300, so no short context exists
    (200, 300, 300, FactorSet.LONG),
])
def test_gguf_context_size_makes_llama_cpp_pick_the_transformers_set(length, l_orig, n_ctx, expected):
    assert n_ctx_for(length, l_orig) == n_ctx
    assert n_ctx >= length
    assert choose_by_context_size(n_ctx, l_orig) is expected


def test_parse_target():
    assert parse_target("onnx=out/x").kind == "onnx" and str(parse_target("onnx=out/x").path) == "out/x"
    assert parse_target("transformers").path is None
    with pytest.raises(TargetError):
        parse_target("tensorrt=engine")


def _synthetic_report() -> VerifyReport:
    report = VerifyReport(src="m", device="cpu", dtype="float32", seed=0, cache_semantics="kept",
                          reference={"dtype": "float64", "device": "cpu", "spec_source": "m/config.json",
                                     "l_orig": 256, "max_positions": 1024, "attention_factor": 1.118},
                          tool_version="0.1.0")
    report.cases.append(CaseInfo("short", "200", 200, 0, 200, 200, ["short"], 0.1, [[0, 200]],
                                 {"short": {"rel_l2": 1e-6, "kl": 1e-13, "top1": 1.0}}))
    metrics = {"max_abs_diff": 1e-5, "relative_l2": 1e-7, "mean_kl": 1e-12, "top1_agreement": 1.0, "positions": 200,
               "worst_position": 17}
    tol = Tolerance(1e-4, 1e-6, 0.99).as_dict()
    floored = Tolerance(1e-4, 1e-6, 0.99, floor={"rel_l2": 1e-6, "kl": 1e-13, "top1": 1.0, "margin": 4.0}).as_dict()
    report.results += [
        CaseResult("transformers (float32)", "transformers", "float32", "m", "short", "200", 200, "pass", "short",
                   "short", metrics, floored, [], "", 0.2),
        CaseResult("onnx:x (fp32)", "onnx", "fp32", "x", "short", "200", 200, "fail", "long", "short",
                   {**metrics, "relative_l2": math.nan}, tol, ["rel_l2 nan > 0.0001"], "", 0.1),
        CaseResult("gguf:y (f32)", "gguf", "f32", "y", "decode", "255+2", 257, "skip", note="no cache switch"),
        CaseResult("gguf:z (f32)", "gguf", "f32", "z", "short", "200", 200, "error", failures=["ValueError: x"]),
    ]
    return report


def test_json_report_validates_against_the_shipped_schema():
    jsonschema = pytest.importorskip("jsonschema")
    report = _synthetic_report()
    data = json.loads(report_json(report))  # strict JSON: the NaN became null
    assert data["results"][1]["metrics"]["relative_l2"] is None
    assert data["passed"] is False and data["counts"] == {"pass": 1, "fail": 1, "skip": 1, "error": 1}
    jsonschema.Draft202012Validator.check_schema(load_schema())
    jsonschema.validate(data, load_schema())
    data["results"][0]["status"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, load_schema())


def test_junit_has_one_testcase_per_result_with_failure_skip_and_error():
    root = ET.fromstring(report_junit(_synthetic_report()))
    suite = root.find("testsuite")
    counts = tuple(suite.get(k) for k in ("tests", "failures", "errors", "skipped"))
    assert counts == ("4", "1", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == ["verify.transformers", "verify.onnx", "verify.gguf", "verify.gguf"]
    assert cases[1].find("failure").get("message") == "rel_l2 nan > 0.0001"
    assert cases[2].find("skipped") is not None and cases[3].find("error") is not None
    assert json.loads(cases[0].find("system-out").text)["relative_l2"] == 1e-7


def test_chunked_comparison_equals_the_whole_at_once(monkeypatch):
    from longrope_convert.verify import metrics

    gen = torch.Generator().manual_seed(11)
    ref = torch.randn(300, 512, generator=gen, dtype=torch.float64)
    tgt = (ref + 0.05 * torch.randn(300, 512, generator=gen, dtype=torch.float64)).to(torch.float32)
    tgt[7] = tgt[7].flip(0)  # one position whose argmax surely moves
    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 512 * 7)  # 43 chunks, the last one short
    chunked = metrics.compare_logits(ref, tgt)
    t = tgt.to(torch.float64)
    log_p, log_q = torch.log_softmax(ref, -1), torch.log_softmax(t, -1)
    assert chunked.positions == 300
    assert chunked.max_abs_diff == pytest.approx((ref - t).abs().max().item(), rel=1e-12)
    assert chunked.relative_l2 == pytest.approx(((ref - t).norm() / ref.norm()).item(), rel=1e-12)
    assert chunked.worst_row == int((ref - t).abs().amax(-1).argmax())
    rows = ((ref - t).norm(dim=-1) / ref.norm(dim=-1)).tolist()
    assert chunked.row_errors == pytest.approx(rows, rel=1e-12)
    assert chunked.mean_kl == pytest.approx((log_p.exp() * (log_p - log_q)).sum(-1).mean().item(), rel=1e-9)
    assert chunked.top1_agreement == (ref.argmax(-1) == t.argmax(-1)).double().mean().item() < 1.0


def test_precision_floor_raises_limits_but_never_an_override():
    from longrope_convert.verify.metrics import LogitComparison
    from longrope_convert.verify.tolerances import FLOOR_MARGIN

    floor = LogitComparison(max_abs_diff=0.1, relative_l2=1.2e-3, mean_kl=1e-5, top1_agreement=0.998, positions=9)
    tol = tolerance_for("transformers", "float32", (), 16384, floor)
    assert tol.rel_l2 == pytest.approx(FLOOR_MARGIN * 1.2e-3) and tol.kl == pytest.approx(FLOOR_MARGIN**2 * 1e-5)
    assert tol.top1 == pytest.approx(0.99) and tol.floor["rel_l2"] == 1.2e-3
    tiny = LogitComparison(max_abs_diff=0.0, relative_l2=1e-9, mean_kl=0.0, top1_agreement=1.0, positions=9)
    table = tolerance_for("transformers", "float32", (), 200)
    assert tolerance_for("transformers", "float32", (), 200, tiny).rel_l2 == table.rel_l2  # the table is the floor
    override = parse_override("rel_l2=1e-9")
    assert tolerance_for("transformers", "float32", (override,), 16384, floor).rel_l2 == pytest.approx(
        1e-9 * (1 + 16384 / 4096))
