"""LongRoPE v1's n_hat start tokens: positions < n_hat keep plain RoPE (factors 1, no attention factor).

Only our ONNX graphs express it (`export-onnx --start-tokens N`, recorded in the metadata); the float64
reference takes it from the spec (`verify --start-tokens N`); HF configs and GGUF cannot, so bake and hf-to-gguf
refuse it unless told to drop it, and verify skips transformers and GGUF targets when the truth has it.
L_orig 256 -> 1024 on the demo's tiny models; attention factor sqrt(1 + ln 4 / ln 256) = 1.118.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from longrope_convert.convert.export_onnx import export_onnx
from longrope_convert.formats.factor_set import FactorSet
from longrope_convert.formats.onnx.metadata import START_TOKENS, read_metadata, spec_from_metadata
from longrope_convert.formats.onnx.rotary import PLAIN_INV_FREQ
from longrope_convert.formats.spec_inputs import with_start_tokens
from longrope_convert.verify.metrics import compare_logits
from longrope_convert.verify.onnx_runner import OnnxDecoderSession
from longrope_convert.verify.reference_model import ReferenceDecoder

from ..conftest import cli_result as run_cli

N_HAT = 16
L_ORIG = 256
FP32_REL_L2 = 1e-4
ARCHS = ("LlamaForCausalLM", "Phi3ForCausalLM")  # full and partial rotary


def ids(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 512, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """hf_class -> (plain, baked, plain graph, n_hat graph): the demo's tiny checkpoints and two fp32 exports."""
    from longrope_convert.convert.demo.models import build_demo_models, prepare_workdir

    root = tmp_path_factory.mktemp("start_tokens")
    out = {}
    for m in build_demo_models(prepare_workdir(root / "work"), ARCHS):
        plain_graph = export_onnx(m.baked, root / f"{m.hf_class}-plain").output
        n_hat_graph = export_onnx(m.baked, root / f"{m.hf_class}-nhat", start_tokens=N_HAT).output
        out[m.hf_class] = (m.plain, m.baked, plain_graph, n_hat_graph)
    return out


def reference(baked: Path, start_tokens: int) -> ReferenceDecoder:
    from longrope_convert.formats.hf.checkpoint import open_checkpoint

    spec = with_start_tokens(open_checkpoint(baked).require_spec(), start_tokens)
    return ReferenceDecoder(baked, dtype=torch.float64, spec=spec)


def as_torch(array) -> torch.Tensor:
    return torch.from_numpy(array.astype("float32"))


def test_metadata_records_n_hat_and_plain_graphs_gain_nothing(models):
    _, _, plain, n_hat = models["LlamaForCausalLM"]
    props = read_metadata(n_hat / "model.onnx")
    assert json.loads(props[START_TOKENS]) == N_HAT
    assert spec_from_metadata(props).start_tokens == N_HAT
    plain_props = read_metadata(plain / "model.onnx")
    assert START_TOKENS not in plain_props and spec_from_metadata(plain_props).start_tokens == 0
    plain_model, n_hat_model = (onnx.load(str(p / "model.onnx")) for p in (plain, n_hat))
    assert PLAIN_INV_FREQ not in {t.name for t in plain_model.graph.initializer}
    assert PLAIN_INV_FREQ in {t.name for t in n_hat_model.graph.initializer}
    # the n_hat switch costs a fixed handful of nodes; a plain graph has none of them
    assert not any("start_token" in n.name for n in plain_model.graph.node)
    assert len(n_hat_model.graph.node) - len(plain_model.graph.node) == 8  # angles, concat, less, unsqueeze,
    # cos, sin and the two Where


@pytest.mark.parametrize("hf_class", ARCHS)
@pytest.mark.parametrize("length", [200, 600])  # short set, long set
def test_n_hat_graph_matches_the_n_hat_reference_and_differs_from_plain(models, hf_class, length):
    _, baked, plain, n_hat = models[hf_class]
    x = ids(length)
    truth = reference(baked, N_HAT).forward(x)
    assert truth.factor_set is (FactorSet.LONG if length > L_ORIG else FactorSet.SHORT)
    got, _ = OnnxDecoderSession(n_hat).forward(x.numpy())
    cmp = compare_logits(truth.logits, as_torch(got))
    assert cmp.relative_l2 <= FP32_REL_L2, cmp
    assert cmp.top1_agreement == 1.0
    plain_logits, _ = OnnxDecoderSession(plain).forward(x.numpy())
    apart = compare_logits(truth.logits, as_torch(plain_logits))
    assert apart.relative_l2 > 100 * FP32_REL_L2, apart  # the start tokens change every later logit


@pytest.mark.parametrize("hf_class", ARCHS)
@pytest.mark.parametrize("prefill, steps", [(10, 12), (L_ORIG - 1, 2)])  # crossing n_hat; crossing L_orig
def test_cached_decoding_keeps_start_tokens_plain(models, hf_class, prefill, steps):
    """Steps through the KV cache: the graph decides per position id, as the reference cache does."""
    _, baked, _, n_hat = models[hf_class]
    x = ids(prefill + steps, seed=3)
    ref = reference(baked, N_HAT)
    sess = OnnxDecoderSession(n_hat)
    result = ref.forward(x[:, :prefill])
    _, past = sess.forward(x[:, :prefill].numpy())
    for pos in range(prefill, prefill + steps):
        result = ref.forward(x[:, pos:pos + 1], cache=result.cache)
        got, past = sess.forward(x[:, pos:pos + 1].numpy(), past)
        cmp = compare_logits(result.logits[:, -1], as_torch(got[:, -1]))
        assert cmp.relative_l2 <= FP32_REL_L2, (pos, cmp)


def test_verify_start_tokens_passes_the_n_hat_graph_and_skips_what_cannot_express_it(models, tmp_path, capsys):
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf

    _, baked, _, n_hat = models["LlamaForCausalLM"]
    gguf = convert_hf_to_gguf(baked, tmp_path / "m.gguf", outtype="f32", progress=False).output
    report = tmp_path / "r.json"
    code, out, _ = run_cli(["verify", baked, "--onnx", n_hat, "--gguf", gguf, "--start-tokens", N_HAT,
                            "--lengths", "200,600,255+2", "--json", report], capsys)
    results = json.loads(report.read_text())["results"]
    by_kind = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r)
    assert code == 0, out
    assert [r["status"] for r in by_kind["onnx"]] == ["pass"] * 3
    assert all(r["metrics"]["relative_l2"] <= FP32_REL_L2 for r in by_kind["onnx"])
    for kind in ("transformers", "gguf"):
        assert {r["status"] for r in by_kind[kind]} == {"skip"}
        assert all(f"cannot express n_hat = {N_HAT}" in r["note"] for r in by_kind[kind])


def test_verify_without_start_tokens_fails_the_n_hat_graph(models, tmp_path, capsys):
    """Positions < n_hat differ in both sets (plain vs factors x attention factor 1.118), and every later
    position attends to them: short, long and decode cases all fail, with a note naming the cause."""
    _, baked, plain, n_hat = models["LlamaForCausalLM"]
    report = tmp_path / "r.json"
    code, _, _ = run_cli(["verify", baked, "--no-transformers", "--onnx", n_hat, "--lengths", "200,600,255+2",
                          "--json", report], capsys)
    results = json.loads(report.read_text())["results"]
    assert code == 1
    assert [r["status"] for r in results] == ["fail"] * 3
    assert all(r["metrics"]["relative_l2"] > 20 * FP32_REL_L2 for r in results)  # 1e-2 .. 4e-2 measured
    assert all(f"graph has n_hat {N_HAT} start tokens, reference 0" in r["note"] for r in results)
    # and the other way round: a plain graph against an n_hat truth
    code, _, _ = run_cli(["verify", baked, "--no-transformers", "--onnx", plain, "--start-tokens", N_HAT,
                          "--lengths", "200", "--json", report, "--force"], capsys)
    assert code == 1 and json.loads(report.read_text())["results"][0]["status"] == "fail"


def test_inspect_shows_the_graph_n_hat(models, capsys):
    code, out, _ = run_cli(["inspect", models["LlamaForCausalLM"][3]], capsys)
    assert code == 0 and f"n_hat start tokens {N_HAT}" in out


def test_export_refuses_n_hat_beyond_l_orig(models, tmp_path, capsys):
    code, _, err = run_cli(["export-onnx", models["LlamaForCausalLM"][1], "-o", tmp_path / "o",
                            "--start-tokens", L_ORIG + 1], capsys)
    assert code == 2 and "n_hat start tokens must be in 0..L_orig (256)" in err
    assert not (tmp_path / "o").exists()


@pytest.fixture()
def prefixed_factors(models, tmp_path) -> tuple[Path, Path, Path]:
    """The demo's long factors as a LongRoPE search vector with n_hat first, and its short factors."""
    plain, baked, _, _ = models["LlamaForCausalLM"]
    long = (baked.parent / "long_factors.csv").read_text()
    prefixed = tmp_path / "long_with_n_hat.csv"
    prefixed.write_text(f"{N_HAT}\n" + long)
    return plain, prefixed, baked.parent / "short_factors.csv"


@pytest.mark.parametrize("verb, out_name", [("bake", "baked"), ("hf-to-gguf", "m.gguf")])
def test_bake_and_gguf_refuse_n_hat_unless_dropped(prefixed_factors, tmp_path, capsys, verb, out_name):
    plain, prefixed, short = prefixed_factors
    args = [verb, plain, "-o", tmp_path / out_name, "--long-factors", prefixed, "--short-factors", short,
            "--max-position-embeddings", 1024, "--strip-search-prefix"] + (["--outtype", "f32"] * (verb != "bake"))
    code, _, err = run_cli(args, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert f"n_hat = {N_HAT} start tokens" in errors[0] and "--drop-start-tokens" in errors[0]
    assert not (tmp_path / out_name).exists()
    code, _, err = run_cli(args + ["--drop-start-tokens"], capsys)
    assert code == 0 and f"n_hat = {N_HAT} start tokens dropped" in err
    assert (tmp_path / out_name).exists()


def test_piecewise_prefix_still_strips_without_the_drop_flag(prefixed_factors, tmp_path, capsys):
    plain, prefixed, short = prefixed_factors
    piecewise = tmp_path / "long_piecewise.csv"
    piecewise.write_text("12\n40\n" + prefixed.read_text().split("\n", 1)[1])
    code, _, _ = run_cli(["bake", plain, "-o", tmp_path / "b", "--long-factors", piecewise, "--short-factors",
                          short, "--max-position-embeddings", 1024, "--strip-search-prefix"], capsys)
    assert code == 0
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    expected = [float(v) for v in prefixed.read_text().split()[1:]]
    assert config["rope_scaling"]["long_factor"] == expected
