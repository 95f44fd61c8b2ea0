"""Routing flips: a near-tie MoE token routed otherwise by a float32 runtime is recognised, named and left out of
the metrics only when it alone fails a case; conversion errors still fail (verify/routing_flips.py)."""

import json

import pytest
import torch
from longrope_convert.verify.metrics import compare_logits
from longrope_convert.verify.reference_moe import routing_margin
from longrope_convert.verify.reference_run import TruthLogits
from longrope_convert.verify.routing_flips import excluding_routing_flips, precision_floor
from longrope_convert.verify.tolerances import Tolerance

TIGHT = Tolerance(rel_l2=2e-4, kl=1e-6, top1=0.99)
ROWS, VOCAB = 400, 64


def test_margin_is_the_gap_to_the_nearest_rank_change_relative_to_the_largest_score():
    scores = torch.tensor([[4.0, 3.0, 1.0, 0.0], [4.0, 3.999, 1.0, 0.0], [4.0, 3.0, 2.9998, 0.0]], dtype=torch.float64)
    margin = routing_margin("softmax_topk", scores, 2, 0.01)
    assert margin.tolist() == pytest.approx([0.25, 0.00025, 0.00005])


def test_sparsemixer_margin_includes_the_jitter_threshold():
    """An expert at (ref - s_j) / ref = 2 * eps + 1e-6 from the top score is a hair from entering the top mask."""
    eps = 0.01
    near = 4.0 * (1 - 2 * eps - 1e-6)
    scores = torch.tensor([[4.0, near, 1.0, 0.0], [4.0, 2.0, 1.0, 0.0]], dtype=torch.float64)
    sparse = routing_margin("sparsemixer", scores, 2, eps)
    topk = routing_margin("softmax_topk", scores, 2, eps)
    assert sparse[0] == pytest.approx(1e-6, rel=1e-3) and topk[0] > 0.01
    assert sparse[1] == pytest.approx(0.25)


def _case(flip_rows: list[int], margin_at_flips: float, shift: float = 0.0):
    """Truth logits, a target within float32 noise of it except whole-expert-sized errors at `flip_rows`, and
    the truth's margins (large everywhere, `margin_at_flips` at those rows)."""
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(ROWS, VOCAB, generator=g, dtype=torch.float64) * 3
    target = truth + 1e-6 * torch.randn(ROWS, VOCAB, generator=g, dtype=torch.float64) + shift
    target[flip_rows] += torch.randn(len(flip_rows), VOCAB, generator=g, dtype=torch.float64)
    margins = torch.full((ROWS,), 0.05, dtype=torch.float64)
    margins[flip_rows] = margin_at_flips
    return TruthLogits(truth, margins), target


def _judge(truth: TruthLogits, target: torch.Tensor, tol: Tolerance = TIGHT):
    comparison = compare_logits(truth.logits, target)
    return comparison, excluding_routing_flips(comparison, truth, target, torch.arange(1000, 1000 + ROWS), tol)


def test_a_near_tie_row_that_alone_fails_the_case_is_a_named_routing_flip():
    truth, target = _case([123], 2e-5)
    full, judged = _judge(truth, target)
    assert full.relative_l2 > TIGHT.rel_l2  # the flip alone would fail the case
    assert judged.comparison.relative_l2 < 1e-5 and judged.comparison.positions == ROWS - 1
    assert [f.position for f in judged.flips] == [1123] and judged.flips[0].margin == pytest.approx(2e-5)
    assert "routing flip at position 1123" in judged.note
    assert judged.metrics()["routing_flips"][0]["position"] == 1123


@pytest.mark.parametrize("why", ["far from a tie", "too many", "loose limit", "fails anyway", "passes anyway"])
def test_rows_count_as_they_are_unless_flips_alone_explain_the_failure(why):
    rows, margin, tol, shift = [123], 2e-5, TIGHT, 0.0
    if why == "far from a tie":
        margin = 1e-2
    elif why == "too many":  # 2% of the rows: a conversion error, not routing
        rows = list(range(0, ROWS, 50))
    elif why == "loose limit":  # a bf16/quantized limit absorbs a flip; none are recognised there
        tol = Tolerance(rel_l2=5e-2, kl=1e-2, top1=0.9, max_abs=0.5)
    elif why == "fails anyway":  # a rope error elsewhere too
        shift = 1e-2
    elif why == "passes anyway":
        margin, rows = 2e-5, []
    truth, target = _case(rows, margin, shift)
    full, judged = _judge(truth, target, tol)
    assert judged.flips == () and judged.comparison == full and judged.note == ""
    assert "routing_flips" not in judged.metrics()


def test_the_precision_floor_leaves_the_twins_own_flips_out():
    truth, twin = _case([7], 1e-5)
    floor = precision_floor(truth, TruthLogits(twin))
    assert floor.relative_l2 < 1e-5 and floor.positions == ROWS - 1


def test_the_reference_reports_routing_margins_for_moe_only(demo_models):
    from longrope_convert.formats.factor_set import FactorSet
    from longrope_convert.verify.reference_run import ReferenceRunner

    for model in (demo_models["PhimoeForCausalLM"], demo_models["LlamaForCausalLM"]):
        runner = ReferenceRunner(model.baked, None)
        ids = torch.randint(3, 512, (1, 300), generator=torch.Generator().manual_seed(1))
        positions = torch.tensor([0, 17, 255, 299])
        truth = runner.prefill(ids, FactorSet.LONG, positions)
        decoded = runner.decode(ids[:, :258], 256)
        if model.hf_class == "PhimoeForCausalLM":
            assert truth.routing_margin.shape == (4,) and bool((truth.routing_margin >= 0).all())
            assert decoded.routing_margin.shape == (2,)
        else:
            assert truth.routing_margin is None and decoded.routing_margin is None


def test_onnx_phimoe_at_l_orig_4096_passes_naming_any_routing_flip(tmp_path):
    """The measured case (docs/phimoe.md): the tiny PhiMoE with L_orig 4096, ONNX fp32 at 4,097 tokens, where
    onnxruntime 1.32 routes one near-tie token (position 3048) otherwise than the float64 truth. Another build may
    route it alike; either way the case passes, and every flip it names is a near tie that alone failed."""
    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.example_factors import example_long_factors, example_short_factors
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint
    from longrope_convert.convert.export_onnx import export_onnx
    from longrope_convert.formats.spec_inputs import SpecRequest
    from longrope_convert.verify.runner import VerifyOptions, run_verification
    from longrope_convert.verify.report_files import load_schema, report_json
    from longrope_convert.verify.targets import TargetRequest

    jsonschema = pytest.importorskip("jsonschema")
    shape = TinyShape(original_max_position_embeddings=4096)
    plain = write_tiny_checkpoint(tmp_path / "plain", "PhimoeForCausalLM", shape, seed=1234)
    (tmp_path / "long.csv").write_text("".join(f"{v!r}\n" for v in example_long_factors(shape.head_dim, 32.0)))
    (tmp_path / "short.csv").write_text("".join(f"{v!r}\n" for v in example_short_factors(shape.head_dim)))
    request = SpecRequest(long_factors=tmp_path / "long.csv", short_factors=tmp_path / "short.csv",
                          max_position_embeddings=131072)
    baked = bake_checkpoint(plain, tmp_path / "baked", request).output
    onnx = export_onnx(baked, tmp_path / "onnx").output
    report = run_verification(VerifyOptions(src=baked, targets=(TargetRequest("onnx", onnx),), lengths="4097",
                                            device="cpu", progress=False))
    (row,) = report.results
    assert row.status == "pass", (row.failures, row.metrics)
    jsonschema.validate(json.loads(report_json(report)), load_schema())  # metrics.routing_flips included
    for flip in row.metrics.get("routing_flips", []):
        assert flip["margin"] < row.tolerance["rel_l2"] < flip["relative_l2"]
        assert f"routing flip at position {flip['position']}" in row.note
