"""Phi-3.5-MoE (PhimoeForCausalLM) end to end: spec semantics (per-set mscale), sparsemixer routing, bake, GGUF,
ONNX and verify, with the numbers docs/phimoe.md records."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from longrope_convert.formats.factor_set import FactorSet
from longrope_convert.formats.hf.config import read_config, spec_from_config
from longrope_convert.formats.spec import LongRopeSpec
from longrope_convert.verify.reference_model import ReferenceDecoder
from longrope_convert.verify.reference_moe import softmax_topk_renormalised, sparsemixer_top2

from .gguf_fixtures import converted, gguf_out  # noqa: F401 (a fixture)
from .onnx_fixtures import onnx_exports  # noqa: F401 (a fixture)

ARCH = "PhimoeForCausalLM"
REPO = Path(__file__).resolve().parents[2]
TF4_PATH = Path(os.environ.get("LONGROPE_TF4_PATH", REPO / ".venv-compat" / "tf4"))
PUBLISHED_MSCALE = 1.243163121016122
LENGTHS = (200, 256, 257, 600)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def phimoe(demo_models, onnx_exports, gguf_out):
    """The demo's tiny PhiMoE (4 experts, top-2, L_orig 256 -> 1024) baked, plus its GGUF and ONNX (the session's
    shared ones)."""
    from longrope_convert.convert.demo.models import DemoArtifacts

    model = demo_models[ARCH]
    return DemoArtifacts(model, converted(model.baked, gguf_out, "f32", model.gguf_factor_sets), onnx_exports[ARCH][1])


@pytest.fixture(scope="module")
def split_mscales(phimoe, tmp_path_factory):
    """The baked checkpoint with short_mscale 1.0 and long_mscale 1.243 (distinct, to see which one runs)."""
    folder = tmp_path_factory.mktemp("split")
    for f in phimoe.model.baked.iterdir():
        shutil.copy(f, folder / f.name)
    config = read_config(phimoe.model.baked)
    for key in ("rope_scaling", "rope_parameters"):
        config[key] |= {"short_mscale": 1.0, "long_mscale": PUBLISHED_MSCALE}
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def ids_for(length: int) -> torch.Tensor:
    return torch.randint(3, 512, (1, length), generator=torch.Generator().manual_seed(length))


# ----- spec ---------------------------------------------------------------------------------------------------
def test_per_set_attention_factor_replaces_the_default_only_where_given():
    base = LongRopeSpec((2.0,) * 4, (1.0,) * 4, 256, 1024, 10000.0, 8)
    assert base.attention_factor_for(FactorSet.SHORT) == base.attention_factor_for(FactorSet.LONG) == pytest.approx(
        1.118033988749895, rel=1e-15)
    split = LongRopeSpec((2.0,) * 4, (1.0,) * 4, 256, 1024, 10000.0, 8, short_attention_factor=1.0,
                         long_attention_factor=PUBLISHED_MSCALE)
    pos = torch.arange(10)
    cos_s, _ = split.cos_sin(pos, FactorSet.SHORT)
    cos_l, _ = split.cos_sin(pos, FactorSet.LONG)
    assert float(cos_s[0, 0]) == 1.0 and float(cos_l[0, 0]) == pytest.approx(PUBLISHED_MSCALE, rel=1e-15)
    assert split.has_per_set_attention_factors and not base.has_per_set_attention_factors


def test_mscales_are_read_only_for_phimoe(phimoe):
    config = read_config(phimoe.model.baked)
    for key in ("rope_scaling", "rope_parameters"):
        config[key] |= {"short_mscale": 1.0, "long_mscale": PUBLISHED_MSCALE}
    spec = spec_from_config(config)
    assert (spec.short_attention_factor, spec.long_attention_factor) == (1.0, PUBLISHED_MSCALE)
    llama = config | {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    assert spec_from_config(llama).short_attention_factor is None  # LLaMA's modeling code ignores these keys


def test_baked_config_carries_both_mscales_and_l_orig_inside(phimoe):
    config = read_config(phimoe.model.baked)
    scaling = config["rope_scaling"]
    assert set(scaling) == {"type", "short_factor", "long_factor", "short_mscale", "long_mscale",
                            "original_max_position_embeddings"}
    assert scaling["short_mscale"] == scaling["long_mscale"] == pytest.approx(1.118033988749895, rel=1e-15)
    assert config["rope_parameters"]["long_mscale"] == scaling["long_mscale"]


# ----- routing --------------------------------------------------------------------------------------------------
def test_sparsemixer_weights_are_masked_softmaxes_not_renormalised():
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0], [1.0, 0.99, 0.985, 0.0]], dtype=torch.float64)
    weights, experts = sparsemixer_top2(scores, eps=0.01)
    assert experts.tolist() == [[0, 1], [0, 1]]
    # row 0: every other expert is > 2% away -> each multiplier is exactly 1 (sum 2)
    assert weights[0].tolist() == [1.0, 1.0]
    # row 1: experts 1 and 2 are within 2% of the top (1.0): softmax over {0, 1, 2} at 0; then over {1, 2} at 1
    e = torch.exp(torch.tensor([1.0, 0.99, 0.985], dtype=torch.float64))
    assert float(weights[1, 0]) == pytest.approx(float(e[0] / e.sum()), rel=1e-12)
    assert float(weights[1, 1]) == pytest.approx(float(e[1] / e[1:].sum()), rel=1e-12)
    renorm, _ = softmax_topk_renormalised(scores, 2)
    assert renorm.sum(-1).tolist() == pytest.approx([1.0, 1.0])


# ----- runtimes ---------------------------------------------------------------------------------------------------
def test_transformers_5_applies_short_factors_at_every_length_with_the_long_mscale(split_mscales):
    """Measured: 5.x's PhimoeRotaryEmbedding recomputes inv_freq without seq_len (short set) but does switch mscale."""
    import transformers
    from longrope_convert.verify.transformers_runner import load_transformers_model

    if not transformers.__version__.startswith("5."):
        pytest.skip("transformers 5.x behaviour")
    model = load_transformers_model(split_mscales, torch.float32)
    spec = spec_from_config(read_config(split_mscales))
    ref = ReferenceDecoder(split_mscales)
    short_with_long_mscale = ReferenceDecoder(split_mscales, spec=LongRopeSpec(
        spec.short_factor, spec.short_factor, 256, 1024, spec.rope_theta, spec.rotary_dim,
        short_attention_factor=PUBLISHED_MSCALE, long_attention_factor=PUBLISHED_MSCALE))
    with torch.no_grad():
        short = model(ids_for(200)).logits[0]
        long = model(ids_for(600)).logits[0]
    assert rel(short, ref.forward(ids_for(200)).logits[0]) < 1e-5
    assert rel(long, ref.forward(ids_for(600)).logits[0]) > 0.1  # the truth: long factors, long mscale
    assert rel(long, short_with_long_mscale.forward(ids_for(600)).logits[0]) < 1e-5


def test_transformers_4_57_matches_the_reference_on_both_sides_with_split_mscales(split_mscales):
    if not (TF4_PATH / "transformers").is_dir():
        pytest.skip(f"transformers 4.x side environment not installed at {TF4_PATH}")
    script = ("import sys,json,torch,transformers;m=transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1],"
              "dtype=torch.float64).eval();out={}\n"
              "for L in map(int,sys.argv[2:]):\n"
              " ids=torch.randint(3,512,(1,L),generator=torch.Generator().manual_seed(L))\n"
              " out[L]=m(ids).logits[0].tolist()\n"
              "print(json.dumps({'v':transformers.__version__,'logits':out}))")
    env = {**os.environ, "PYTHONPATH": str(TF4_PATH), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", script, str(split_mscales), *map(str, LENGTHS)],
                          capture_output=True, text=True, env=env, check=True)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["v"].startswith("4.")
    ref = ReferenceDecoder(split_mscales)
    for length in LENGTHS:
        logits = torch.tensor(data["logits"][str(length)], dtype=torch.float64)
        assert rel(logits, ref.forward(ids_for(length)).logits[0]) < 1e-5, length


def test_gguf_matches_the_reference_under_llama_cpp_routing_and_diverges_under_sparsemixer(phimoe):
    pytest.importorskip("llama_cpp")
    from longrope_convert.verify.llama_cpp_runner import llama_cpp_logits

    sparse, topk = ReferenceDecoder(phimoe.model.baked), ReferenceDecoder(phimoe.model.baked,
                                                                          moe_routing="softmax_topk")
    for length, n_ctx, which in ((200, 256, FactorSet.SHORT), (600, 768, FactorSet.LONG)):
        ids, pos = ids_for(length), list(range(0, length, 7))
        got = torch.from_numpy(llama_cpp_logits(str(phimoe.gguf), ids[0].tolist(), n_ctx, positions=pos))
        assert rel(got, topk.forward(ids, factor_set=which).logits[0, pos]) < 1e-5  # measured 4.6e-7 / 1.1e-6
        assert rel(got, sparse.forward(ids, factor_set=which).logits[0, pos]) > 0.1  # measured 0.44 / 0.47


def test_verify_passes_onnx_and_gguf_and_reports_known_divergences(phimoe):
    from longrope_convert.verify.runner import VerifyOptions, run_verification
    from longrope_convert.verify.targets import TargetRequest

    targets = (TargetRequest("transformers"), TargetRequest("onnx", phimoe.onnx), TargetRequest("gguf", phimoe.gguf))
    report = run_verification(VerifyOptions(src=phimoe.model.baked, targets=targets, device="cpu"))
    assert report.passed
    onnx = [r for r in report.results if r.kind == "onnx"]
    assert {r.label for r in onnx} >= {"256", "257"} and all(r.status == "pass" for r in onnx)
    assert all(r.metrics["relative_l2"] < 1e-5 for r in onnx)
    # the GGUF is checked against the truth run with llama.cpp's own routing: its rope and weights must match
    gguf = [r for r in report.results if r.kind == "gguf" and r.metrics]
    assert gguf and all(r.status == "pass" and "softmax_topk" in r.note for r in gguf)
    assert all(r.metrics["relative_l2"] < 1e-5 for r in gguf)
    tf_long = [r for r in report.results if r.kind == "transformers" and r.reference_set != "short"]
    assert tf_long and all("long factors not applied" in r.note and r.metrics["relative_l2"] > 0.1 for r in tf_long)
