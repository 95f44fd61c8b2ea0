"""Long cases on CPU: llama.cpp micro-batches keep its numbers, and a case a runtime cannot hold in memory is
skipped with a reason (never an OOM kill that leaves no report)."""

from __future__ import annotations

import pytest
import torch
from longrope_convert.formats.hf.config import read_config
from longrope_convert.formats.hf.geometry import geometry
from longrope_convert.verify import memory
from longrope_convert.verify.runner import VerifyOptions, run_verification
from longrope_convert.verify.targets import TargetRequest


@pytest.fixture(scope="module")
def llama_artifacts(demo_models, tmp_path_factory):
    """The demo LLaMA, its ONNX export and its f32 GGUF."""
    pytest.importorskip("llama_cpp")
    from longrope_convert.convert.export_onnx import export_onnx
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf

    baked = demo_models["LlamaForCausalLM"].baked
    root = tmp_path_factory.mktemp("memory_guard")
    onnx = export_onnx(baked, root / "onnx").output
    gguf_file = convert_hf_to_gguf(baked, root / "model.gguf", outtype="f32", progress=False).output
    return baked, onnx, gguf_file


def all_targets(onnx, gguf_file) -> tuple[TargetRequest, ...]:
    return TargetRequest("transformers"), TargetRequest("onnx", onnx), TargetRequest("gguf", gguf_file)


def test_too_big_reason_names_need_and_availability():
    assert memory.too_big_reason(700, 1000, "x") is None
    reason = memory.too_big_reason(3 * 2**30, 2**30, "the graph's attention scores at 9 tokens (host)")
    assert reason == "the graph's attention scores at 9 tokens (host) would need ~3.0 GiB, 1.0 GiB available"
    assert memory.available_host_bytes() > 0


def test_estimates_grow_as_each_runtime_does(demo_models):
    from longrope_convert.verify.target_llama_cpp import llama_cpp_context_bytes
    from longrope_convert.verify.target_onnx import onnx_forward_bytes

    geo = geometry(read_config(demo_models["LlamaForCausalLM"].baked))
    # ONNX: [heads, T, T] scores, so 4x per doubling; 32k tokens of a 4-head model is tens of GiB
    assert onnx_forward_bytes(65536, geo) / onnx_forward_bytes(32768, geo) > 3.9
    assert onnx_forward_bytes(32768, geo) > 40 * 2**30
    # llama.cpp with micro-batches: linear in n_ctx, well under a GiB at 32k for the tiny model
    assert llama_cpp_context_bytes(65536, 100, geo, 512) / llama_cpp_context_bytes(32768, 100, geo, 512) < 2.01
    assert llama_cpp_context_bytes(32768, 100, geo, 512) < 2**30 < llama_cpp_context_bytes(32768, 100, geo, 32768)


def test_llama_cpp_batches_and_kept_tail_give_the_same_logits(llama_artifacts, monkeypatch):
    from longrope_convert.verify import llama_cpp_runner

    _, _, gguf_file = llama_artifacts
    tokens = torch.randint(0, 512, (600,), generator=torch.Generator().manual_seed(7)).tolist()
    whole = llama_cpp_runner.llama_cpp_logits(gguf_file, tokens, 768)  # UBATCH 512: two batches
    tail = llama_cpp_runner.llama_cpp_logits(gguf_file, tokens, 768, keep=150)  # straddles the batch boundary
    assert tail.shape == (150, 512) and (tail == whole[-150:]).all()
    monkeypatch.setattr(llama_cpp_runner, "UBATCH", 600)
    one = llama_cpp_runner.llama_cpp_logits(gguf_file, tokens, 768)
    monkeypatch.setattr(llama_cpp_runner, "UBATCH", 64)
    small = llama_cpp_runner.llama_cpp_logits(gguf_file, tokens, 768, keep=100)
    assert whole.shape == one.shape == (600, 512) and small.shape == (100, 512)
    assert abs(one - whole).max() / abs(whole).max() < 1e-5
    assert abs(small - whole[-100:]).max() / abs(whole).max() < 1e-5
    with pytest.raises(ValueError):
        llama_cpp_runner.llama_cpp_logits(gguf_file, tokens, 768, keep=601)


def test_rows_that_would_not_fit_are_skipped_with_the_reason(llama_artifacts, monkeypatch):
    from longrope_convert.verify import target_llama_cpp, target_onnx

    baked, onnx, gguf_file = llama_artifacts
    for module in (target_llama_cpp, target_onnx):
        monkeypatch.setattr(module, "available_host_bytes", lambda: 2**20)  # 1 MiB
    report = run_verification(VerifyOptions(
        src=baked, targets=all_targets(onnx, gguf_file),
        lengths="200,600", device="cpu", progress=False))
    rows = {(r.kind, r.label): r for r in report.results}
    for label in ("200", "600"):
        assert rows[("transformers", label)].status == "pass"
        assert rows[("onnx", label)].status == rows[("gguf", label)].status == "skip"
    assert rows[("onnx", "600")].note.startswith("the graph's attention scores at 600 tokens (host) would need ~")
    assert rows[("gguf", "600")].note.startswith("llama.cpp with n_ctx 768 (host) would need ~")
    assert rows[("gguf", "600")].note.endswith(" GiB, 0.0 GiB available")
    assert report.passed


@pytest.mark.slow
def test_cpu_verify_reaches_32k_tokens(llama_artifacts):
    """The GPU's long case on CPU: chunked float64 reference, SDPA transformers, micro-batched llama.cpp
    (about a minute on 2 cores). ONNX is skipped by the memory guard unless the host has ~50 GiB free."""
    baked, onnx, gguf_file = llama_artifacts
    report = run_verification(VerifyOptions(
        src=baked, targets=all_targets(onnx, gguf_file),
        lengths="32768", device="cpu", allow_beyond_max=True, progress=False))
    rows = {r.kind: r for r in report.results}
    assert report.passed
    for kind in ("transformers", "gguf"):
        assert rows[kind].status == "pass" and rows[kind].factor_set == "long"
        assert rows[kind].metrics["positions"] == 32768
    assert rows["onnx"].status == "pass" or "would need" in rows["onnx"].note
