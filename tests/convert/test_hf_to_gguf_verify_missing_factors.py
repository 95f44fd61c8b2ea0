"""verify on a GGUF whose factor tensors were stripped: llama.cpp loads it and silently runs plain RoPE, which can
come close to the reference at short lengths. verify must fail every case with a reason naming the missing
factors and report no factor set, while the intact GGUF passes."""

from __future__ import annotations

import json

import pytest
from longrope_convert.convert.cli import main

from .gguf_fixtures import (
    FACTOR_TENSORS,
    converted,
    gguf_models,
    gguf_out,
    strip_tensors,
)

pytest.importorskip("llama_cpp")
__all__ = ["gguf_models", "gguf_out"]
PREFILL = ("200", "256", "257", "600")


def test_verify_fails_a_gguf_without_factor_tensors_with_the_reason(gguf_models, gguf_out, tmp_path, capsys):
    baked = gguf_models["LlamaForCausalLM"]
    good = converted(baked, gguf_out, "f32", "pair")
    stripped = tmp_path / "stripped.gguf"
    strip_tensors(good, stripped, FACTOR_TENSORS)
    report = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(baked), "--gguf", str(good), "--gguf", str(stripped), "--lengths", ",".join(PREFILL),
              "--no-transformers", "--json", str(report)])
    capsys.readouterr()
    assert exit_info.value.code == 1
    results = json.loads(report.read_text())["results"]
    rows = {r["label"]: r for r in results if "stripped.gguf" in r["target"]}
    good_rows = {r["label"]: r for r in results if good.name in r["target"]}
    assert [good_rows[k]["status"] for k in PREFILL] == ["pass"] * 4
    assert [rows[k]["status"] for k in PREFILL] == ["fail"] * 4
    for k in PREFILL:
        assert rows[k]["factor_set"] is None
        assert any("rope factors missing" in f for f in rows[k]["failures"]), rows[k]["failures"]
    # plain RoPE is measurably wrong here too, but the failure must not depend on it: the reason is always there
    assert rows["200"]["metrics"]["relative_l2"] > 1e-3
