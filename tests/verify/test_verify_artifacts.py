"""verify on real artifacts: ONNX folders (good, and frozen like a short trace) and GGUF files (good, swapped sets).

A frozen graph must fail exactly where it takes the wrong branch (past L_orig); a GGUF with its factor tensors
swapped must fail at every prefill length; both good artifacts pass all cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from longrope_convert.convert.cli import main

LENGTHS = "200,256,257,600,255+2"  # L_orig is 256


def verify_json(args: list[str], tmp_path: Path, capsys) -> tuple[int, list[dict]]:
    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *args, "--lengths", LENGTHS, "--no-transformers", "--json", str(out), "--force"])
    capsys.readouterr()
    return exit_info.value.code, json.loads(out.read_text())["results"]


def by_target(results: list[dict], fragment: str) -> dict[str, dict]:
    return {r["label"]: r for r in results if fragment in r["target"]}


@pytest.fixture(scope="module")
def onnx_pair(demo_models, tmp_path_factory):
    """Phi-3 (partial rotary): a dynamic export and one frozen at the set a trace at 200 tokens bakes."""
    from longrope_convert.convert.export_onnx import export_onnx, export_traced_frozen

    baked = demo_models["Phi3ForCausalLM"].baked
    root = tmp_path_factory.mktemp("verify_onnx")
    good = export_onnx(baked, root / "good").output
    frozen = export_traced_frozen(baked, root / "frozen", example_length=200).output
    return baked, good, frozen


def test_onnx_good_passes_and_frozen_fails_past_l_orig(onnx_pair, tmp_path, capsys):
    baked, good, frozen = onnx_pair
    code, results = verify_json([str(baked), "--onnx", str(good), "--onnx", str(frozen)], tmp_path, capsys)
    assert code == 1
    good_rows, frozen_rows = by_target(results, "onnx:good"), by_target(results, "onnx:frozen")
    assert all(r["status"] == "pass" for r in good_rows.values())
    assert max(r["metrics"]["relative_l2"] for r in good_rows.values()) < 1e-5
    assert good_rows["255+2"]["factor_set"] == "short->long"
    assert {k: r["status"] for k, r in frozen_rows.items()} == {
        "200": "pass", "256": "pass", "257": "fail", "600": "fail", "255+2": "fail"}
    assert frozen_rows["600"]["factor_set"] == "short" and frozen_rows["600"]["reference_set"] == "long"
    assert frozen_rows["600"]["metrics"]["relative_l2"] > 1e-2  # measured ~0.19


@pytest.fixture(scope="module")
def gguf_pair(demo_models, tmp_path_factory):
    """LLaMA: a correct f32 GGUF and one converted with the factor files swapped."""
    pytest.importorskip("llama_cpp")
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf
    from longrope_convert.formats.spec_inputs import SpecRequest

    model = demo_models["LlamaForCausalLM"]
    root = tmp_path_factory.mktemp("verify_gguf")
    baked = model.baked  # the demo's checkpoint carries a tokenizer; it is only read here
    factors = baked.parent
    good = convert_hf_to_gguf(baked, root / "good.gguf", outtype="f32", progress=False).output
    swapped = SpecRequest(long_factors=factors / "short_factors.csv", short_factors=factors / "long_factors.csv")
    bad = convert_hf_to_gguf(baked, root / "swapped.gguf", swapped, outtype="f32", progress=False).output
    return baked, good, bad


def test_gguf_good_passes_and_swapped_factors_fail(gguf_pair, tmp_path, capsys):
    baked, good, bad = gguf_pair
    code, results = verify_json([str(baked), "--gguf", str(good), "--gguf", str(bad)], tmp_path, capsys)
    assert code == 1
    good_rows, bad_rows = by_target(results, "good.gguf"), by_target(results, "swapped.gguf")
    prefill = ["200", "256", "257", "600"]
    assert [good_rows[k]["status"] for k in prefill] == ["pass"] * 4
    assert max(good_rows[k]["metrics"]["relative_l2"] for k in prefill) < 1e-5  # measured ~1e-6
    assert [good_rows[k]["factor_set"] for k in prefill] == ["short", "short", "long", "long"]
    assert [good_rows[k]["note"] for k in prefill] == ["n_ctx 256", "n_ctx 256", "n_ctx 512", "n_ctx 768"]
    assert [bad_rows[k]["status"] for k in prefill] == ["fail"] * 4
    assert min(bad_rows[k]["metrics"]["relative_l2"] for k in prefill) > 1e-2  # measured ~0.22
    assert good_rows["255+2"]["status"] == bad_rows["255+2"]["status"] == "skip"
