"""The exported graph against the float64 reference and transformers, on both sides of L_orig, with a KV cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from longrope_convert.formats.factor_set import FactorSet
from longrope_convert.formats.hf.config import read_config, spec_from_config
from longrope_convert.formats.onnx import names as N
from longrope_convert.formats.onnx.metadata import (
    facts_from_metadata,
    read_metadata,
    spec_from_metadata,
)
from longrope_convert.formats.onnx.rotary import (
    ATTENTION_FACTOR,
    LONG_INV_FREQ,
    SHORT_INV_FREQ,
)
from longrope_convert.verify.metrics import compare_logits

from ..conftest import expect_known_transformers_divergence
from .onnx_fixtures import (
    ARCHS,
    FP32_REL_L2,
    L_ORIG,
    LONG_LEN,
    SHORT_LEN,
    as_torch,
    exports_by_form,
    onnx_decode_step,
    onnx_exports,
    onnx_exports_standard,
    reference,
    session,
    token_ids,
    transformers_decode_step,
)

__all__ = ["onnx_exports", "onnx_exports_standard", "exports_by_form"]  # fixtures used below


@pytest.mark.parametrize("hf_class", ARCHS)
@pytest.mark.parametrize("length", [SHORT_LEN, LONG_LEN])
def test_full_forward_matches_float64_reference(exports_by_form, hf_class, length):
    baked, folder = exports_by_form[hf_class]
    ids = token_ids(length)
    logits, present = session(folder).forward(ids.numpy())
    result = reference(baked).forward(ids)
    assert result.factor_set is (FactorSet.LONG if length > L_ORIG else FactorSet.SHORT)
    cmp = compare_logits(result.logits, as_torch(logits))
    assert cmp.relative_l2 <= FP32_REL_L2, cmp
    assert cmp.top1_agreement == 1.0, cmp
    assert len(present) == session(folder).num_layers
    assert present[0][0].shape[2] == length


@pytest.mark.parametrize("hf_class", ARCHS)
@pytest.mark.parametrize("prefill", [150, LONG_LEN - 1])  # the step stays short / stays long
def test_decode_step_matches_transformers_incremental(request, onnx_exports, hf_class, prefill):
    baked, folder = onnx_exports[hf_class]
    expect_known_transformers_divergence(request, baked, prefill + 1)
    ids = token_ids(prefill + 1, seed=1)
    step, present = onnx_decode_step(folder, ids, prefill)
    cmp = compare_logits(transformers_decode_step(baked, ids, prefill), as_torch(step))
    assert cmp.relative_l2 <= FP32_REL_L2, cmp
    assert cmp.top1_agreement == 1.0
    assert present[-1][1].shape[2] == prefill + 1


@pytest.mark.parametrize("hf_class", ARCHS)
def test_step_crossing_l_orig_keeps_cached_keys_short_rotated(request, exports_by_form, hf_class):
    """Prefill L_orig tokens (short), decode token L_orig+1 (long for the new token only): no re-rotation,
    as transformers and the reference cache do. A full re-forward of L_orig+1 tokens differs measurably."""
    baked, folder = exports_by_form[hf_class]
    expect_known_transformers_divergence(request, baked, L_ORIG + 1)
    ids = token_ids(L_ORIG + 1, seed=2)
    step, _ = onnx_decode_step(folder, ids, L_ORIG)
    ref = reference(baked)
    prefill = ref.forward(ids[:, :L_ORIG])
    cached = ref.forward(ids[:, L_ORIG:], cache=prefill.cache)
    assert (prefill.factor_set, cached.factor_set) == (FactorSet.SHORT, FactorSet.LONG)
    vs_cached = compare_logits(cached.logits, as_torch(step))
    vs_transformers = compare_logits(transformers_decode_step(baked, ids, L_ORIG), as_torch(step))
    drift = compare_logits(ref.forward(ids).logits[:, -1:], as_torch(step))
    assert vs_cached.relative_l2 <= FP32_REL_L2, vs_cached
    assert vs_transformers.relative_l2 <= FP32_REL_L2, vs_transformers
    assert drift.relative_l2 > 100 * vs_cached.relative_l2, drift  # the semantics are distinguishable
    print(f"{hf_class} crossing: vs cached reference {vs_cached.relative_l2:.2e}, "
          f"vs transformers {vs_transformers.relative_l2:.2e}, drift vs full re-forward {drift.relative_l2:.3e} "
          f"(max abs {drift.max_abs_diff:.3g})")


def _padded_feeds(sess, ids: np.ndarray, mask: np.ndarray) -> dict:
    """Feeds with an explicit attention_mask; position_ids count real tokens only, as HF generate builds them."""
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    feeds = {N.INPUT_IDS: ids, N.ATTENTION_MASK: mask, N.POSITION_IDS: positions}
    return feeds | {name: empty for i, (k, v) in enumerate(sess.empty_past(len(ids)))
                    for name, empty in ((N.past_key(i), k), (N.past_value(i), v))}


def _rows_run_alone_and_together(sess):
    """Two rows in one run give each row's own logits; returns the ids and the batched logits."""
    ids = token_ids(300, seed=3, batch=2).numpy()
    both, _ = sess.forward(ids)
    for row in range(2):
        alone, _ = sess.forward(ids[row:row + 1])
        np.testing.assert_allclose(both[row], alone[0], rtol=1e-4, atol=1e-4)
    return ids, both


def test_gqa_batch_and_right_padding(onnx_exports):
    """GroupQueryAttention graph: two rows in one run give each row's own logits, also when one row is
    right-padded (GroupQueryAttention counts valid tokens from the left: seqlens_k = sum(mask) - 1)."""
    _, folder = onnx_exports["Qwen2ForCausalLM"]
    sess = session(folder)
    ids, both = _rows_run_alone_and_together(sess)
    pad = 5
    mask = np.ones_like(ids)
    mask[0, -pad:] = 0
    logits = sess.session.run([N.LOGITS], _padded_feeds(sess, ids, mask))[0]
    alone, _ = sess.forward(ids[:1, :-pad])
    np.testing.assert_allclose(logits[0, :-pad], alone[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[1], both[1], rtol=1e-4, atol=1e-4)


def test_standard_batch_and_left_padding(onnx_exports_standard):
    """Standard-ops graph: dynamic batch, also when one row is left-padded (attention_mask 0 on the pads);
    GroupQueryAttention cannot express left padding, so padded batches need `--attention standard`."""
    _, folder = onnx_exports_standard["Qwen2ForCausalLM"]
    sess = session(folder)
    ids, both = _rows_run_alone_and_together(sess)
    pad = 5
    padded = ids.copy()
    padded[0, :pad] = 0
    mask = np.ones_like(ids)
    mask[0, :pad] = 0
    logits = sess.session.run([N.LOGITS], _padded_feeds(sess, padded, mask))[0]
    alone, _ = sess.forward(ids[:1, pad:])
    np.testing.assert_allclose(logits[0, pad:], alone[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[1], both[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hf_class", ARCHS)
def test_graph_holds_both_tables_from_the_spec_and_metadata(onnx_exports, hf_class):
    baked, folder = onnx_exports[hf_class]
    spec = spec_from_config(read_config(baked))
    model = onnx.load(str(folder / N.MODEL_FILE))
    onnx.checker.check_model(model, full_check=True)
    tables = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for name, which in ((LONG_INV_FREQ, FactorSet.LONG), (SHORT_INV_FREQ, FactorSet.SHORT)):
        np.testing.assert_array_equal(tables[name], np.asarray(spec.inv_freq_list(which), np.float32))
    assert {"Greater", "Where"} <= {n.op_type for n in model.graph.node}
    props = read_metadata(folder / N.MODEL_FILE)
    assert spec_from_metadata(props) == spec
    facts = facts_from_metadata(props)
    assert facts.is_dynamic and facts.architecture == hf_class and facts.dtype == "fp32"
    assert facts.attention == "gqa"
    fused = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(fused) == facts.num_layers and {n.domain for n in fused} == {"com.microsoft"}
    assert all(onnx.helper.get_attribute_value(a) == 0 for n in fused for a in n.attribute if a.name == "do_rotary")
    assert [i.name for i in model.graph.input[:3]] == [N.INPUT_IDS, N.ATTENTION_MASK, N.POSITION_IDS]
    assert model.graph.output[0].name == N.LOGITS


def test_attention_factor_multiplies_cos_sin(onnx_exports):
    """The mscale is in the graph: the constant equals spec.attention_factor (1.118 for s = 4, L_orig 256)."""
    baked, folder = onnx_exports["LlamaForCausalLM"]
    spec = spec_from_config(read_config(baked))
    model = onnx.load(str(folder / N.MODEL_FILE))
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}[ATTENTION_FACTOR]
    assert stored.dtype == np.float32 and stored == np.float32(spec.attention_factor)
    assert spec.attention_factor == pytest.approx(1.118033989, rel=1e-9)


def test_standard_form_has_no_contrib_ops_and_says_so(onnx_exports_standard):
    """`--attention standard`: plain ONNX only (default domain), recorded as such in the metadata."""
    _, folder = onnx_exports_standard["Phi3ForCausalLM"]
    model = onnx.load(str(folder / N.MODEL_FILE))
    assert {n.domain for n in model.graph.node} == {""}
    assert [o.domain for o in model.opset_import] == [""]
    assert facts_from_metadata(read_metadata(folder / N.MODEL_FILE)).attention == "standard"


@pytest.mark.parametrize("attention", ["gqa", "standard"])
def test_sliding_window_matches_transformers(tmp_path, attention):
    """A Mistral config with sliding_window 64: the graph's mask (standard) or GroupQueryAttention's
    local_window_size equals transformers' window at 600 tokens."""
    import json

    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.models import write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import write_tiny_checkpoint
    from longrope_convert.convert.export_onnx import export_onnx
    from longrope_convert.formats.spec_inputs import SpecRequest
    from longrope_convert.verify.transformers_runner import (
        load_transformers_model,
        transformers_logits,
    )

    plain = write_tiny_checkpoint(tmp_path / "plain", "MistralForCausalLM", seed=7)
    config = json.loads((plain / "config.json").read_text())
    (plain / "config.json").write_text(json.dumps(config | {"sliding_window": 64}))
    long_path, short_path = write_example_factor_files(tmp_path, 16)
    baked = bake_checkpoint(plain, tmp_path / "baked", SpecRequest(long_factors=long_path, short_factors=short_path,
                                                                   max_position_embeddings=1024)).output
    folder = export_onnx(baked, tmp_path / "onnx", attention=attention).output
    ids = token_ids(LONG_LEN, seed=6)
    expected = transformers_logits(load_transformers_model(baked), ids)
    cmp = compare_logits(expected, as_torch(session(folder).forward(ids.numpy())[0]))
    assert cmp.relative_l2 <= FP32_REL_L2 and cmp.top1_agreement == 1.0, cmp
    unwindowed = reference(baked)
    unwindowed.windows = (None,) * len(unwindowed.windows)  # the window must matter at 600 tokens, or this test proves nothing
    assert compare_logits(unwindowed.forward(ids).logits, expected).relative_l2 > 1e-2


def test_tied_embeddings(tmp_path):
    """A checkpoint without lm_head.weight (tie_word_embeddings) uses the embedding as the output matrix."""
    import json

    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.models import write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import write_tiny_checkpoint
    from longrope_convert.convert.export_onnx import export_onnx
    from longrope_convert.formats.spec_inputs import SpecRequest
    from safetensors.numpy import load_file, save_file

    plain = write_tiny_checkpoint(tmp_path / "plain", "Qwen2ForCausalLM", seed=8)
    tensors = load_file(plain / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, plain / "model.safetensors")
    config = json.loads((plain / "config.json").read_text())
    (plain / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": True}))
    long_path, short_path = write_example_factor_files(tmp_path, 16)
    baked = bake_checkpoint(plain, tmp_path / "baked", SpecRequest(long_factors=long_path, short_factors=short_path,
                                                                   max_position_embeddings=1024)).output
    ids = token_ids(LONG_LEN, seed=9)
    logits, _ = session(export_onnx(baked, tmp_path / "onnx").output).forward(ids.numpy())
    cmp = compare_logits(reference(baked).forward(ids).logits, as_torch(logits))
    assert cmp.relative_l2 <= FP32_REL_L2 and cmp.top1_agreement == 1.0, cmp


def test_attention_and_mlp_biases_are_in_the_graph(tmp_path):
    """LLaMA with attention_bias and mlp_bias: every bias (q/k/v/o, gate/up/down) reaches the graph."""
    import json

    import torch
    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.models import write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import write_tiny_checkpoint
    from longrope_convert.convert.export_onnx import export_onnx
    from longrope_convert.formats.spec_inputs import SpecRequest
    from safetensors.torch import load_file, save_file

    plain = write_tiny_checkpoint(tmp_path / "plain", "LlamaForCausalLM", seed=3)
    config = json.loads((plain / "config.json").read_text()) | {"attention_bias": True, "mlp_bias": True}
    (plain / "config.json").write_text(json.dumps(config))
    tensors, gen = load_file(plain / "model.safetensors"), torch.Generator().manual_seed(1)
    for name in [n for n in tensors if n.endswith("_proj.weight")]:
        tensors[name.replace(".weight", ".bias")] = 0.1 * torch.randn(tensors[name].shape[0], generator=gen)
    save_file(tensors, plain / "model.safetensors", metadata={"format": "pt"})
    long_path, short_path = write_example_factor_files(tmp_path, 16)
    baked = bake_checkpoint(plain, tmp_path / "baked", SpecRequest(long_factors=long_path, short_factors=short_path,
                                                                   max_position_embeddings=1024)).output
    folder = export_onnx(baked, tmp_path / "onnx").output
    ids = token_ids(LONG_LEN, seed=4)
    expected = reference(baked).forward(ids).logits
    cmp = compare_logits(expected, as_torch(session(folder).forward(ids.numpy())[0]))
    assert cmp.relative_l2 <= FP32_REL_L2 and cmp.top1_agreement == 1.0, cmp


def test_memory_guard_follows_the_attention_form(onnx_exports):
    """verify sizes a case by the graph's own attention form (metadata): linear for gqa, quadratic for standard."""
    from longrope_convert.formats.hf.checkpoint import open_checkpoint
    from longrope_convert.verify.target_onnx import onnx_forward_bytes

    baked, folder = onnx_exports["LlamaForCausalLM"]
    geo = open_checkpoint(baked).geometry
    assert session(folder).facts.attention == "gqa"
    gqa_growth = onnx_forward_bytes(32768, geo, "gqa") / onnx_forward_bytes(16384, geo, "gqa")
    standard_growth = onnx_forward_bytes(32768, geo, "standard") / onnx_forward_bytes(16384, geo, "standard")
    assert 1.9 < gqa_growth < 2.1 and standard_growth > 3.9
    assert onnx_forward_bytes(131072, geo, "gqa") < onnx_forward_bytes(131072, geo, "standard") / 100
