"""What the GGUF holds: llama.cpp's rope keys, factor tensors, tensor types, permuted Q/K bytes, the spec read
back, explicit attention factors, plain checkpoints plus factor options, and chunked streaming."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf
from longrope_convert.formats.gguf import tensors as gguf_tensors
from longrope_convert.formats.gguf.reader import field_value, read_gguf_spec
from longrope_convert.formats.hf.config import read_config, spec_from_config
from longrope_convert.formats.spec_inputs import SpecRequest
from safetensors.numpy import load_file

from .gguf_fixtures import FACTOR_TENSORS, converted, gguf_models, gguf_out, strip_tensors

__all__ = ["gguf_models", "gguf_out"]


def fields(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {k: field_value(f) for k, f in reader.fields.items()}


def tensors(path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("hf_class, arch", [
    ("LlamaForCausalLM", "llama"), ("MistralForCausalLM", "llama"), ("Qwen2ForCausalLM", "llama"),
    ("Phi3ForCausalLM", "phi3"),
])
def test_rope_keys_and_factor_tensors(gguf_models, gguf_out, hf_class, arch):
    path = converted(gguf_models[hf_class], gguf_out, "f16", "pair")
    spec = spec_from_config(read_config(gguf_models[hf_class]))
    kv, ts = fields(path), tensors(path)
    assert kv["general.architecture"] == arch
    assert kv[f"{arch}.context_length"] == 1024
    assert kv[f"{arch}.rope.scaling.original_context_length"] == 256
    assert kv[f"{arch}.rope.dimension_count"] == spec.rotary_dim
    assert kv[f"{arch}.rope.scaling.attn_factor"] == pytest.approx(spec.attention_factor, rel=1e-7)
    assert f"{arch}.rope.scaling.factor" not in kv  # would compress positions a second time
    if arch == "llama":
        assert kv["llama.rope.scaling.type"] == "longrope"  # llama loads the pair only then
    for name, values in (("rope_factors_long.weight", spec.long_factor),
                         ("rope_factors_short.weight", spec.short_factor)):
        t = ts[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == [spec.rotary_dim // 2]
        np.testing.assert_array_equal(t.data, np.asarray(values, dtype=np.float32))
    assert "rope_freqs.weight" not in ts


def test_spec_reads_back_exactly(gguf_models, gguf_out):
    for hf_class, baked in gguf_models.items():
        spec = read_gguf_spec(converted(baked, gguf_out, "f16", "pair"))
        assert spec == spec_from_config(read_config(baked)), hf_class


def test_llama_cpp_converter_style_gguf_reads_back_from_tensors(gguf_models, gguf_out, tmp_path):
    """Without our keys (a GGUF from another converter) the spec comes from the tensors and rope keys."""
    path = converted(gguf_models["Phi3ForCausalLM"], gguf_out, "f32", "pair")
    reader = gguf.GGUFReader(path)
    writer = gguf.GGUFWriter(tmp_path / "stripped.gguf", "phi3")
    for key, field in reader.fields.items():
        if key.startswith("longrope_convert.") or key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field_value(field)
        sub = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(key, value, field.types[0], sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    spec = read_gguf_spec(tmp_path / "stripped.gguf")
    original = spec_from_config(read_config(gguf_models["Phi3ForCausalLM"]))
    assert spec.long_factor == pytest.approx(original.long_factor, rel=1e-7)
    assert spec.short_factor == pytest.approx(original.short_factor, rel=1e-7)
    assert (spec.original_max_position_embeddings, spec.max_position_embeddings) == (256, 1024)
    assert spec.attention_factor == pytest.approx(original.attention_factor, rel=1e-7)
    assert spec.explicit_attention_factor is None  # float32 copy of the default, not an explicit choice


@pytest.mark.parametrize("outtype, weight_type", [
    ("f32", gguf.GGMLQuantizationType.F32), ("f16", gguf.GGMLQuantizationType.F16),
    ("bf16", gguf.GGMLQuantizationType.BF16), ("q8_0", gguf.GGMLQuantizationType.Q8_0),
])
def test_tensor_types_per_outtype(gguf_models, gguf_out, outtype, weight_type):
    path = converted(gguf_models["LlamaForCausalLM"], gguf_out, outtype, "pair")
    for t in tensors(path).values():
        expected = gguf.GGMLQuantizationType.F32 if len(t.shape) == 1 else weight_type
        assert t.tensor_type == expected, t.name
    assert fields(path)["general.file_type"] == {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}[outtype]


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute (convert_hf_to_gguf / conversion/llama.py), verbatim in numpy."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


@pytest.mark.parametrize("hf_class", ("LlamaForCausalLM", "MistralForCausalLM"))
def test_qk_rows_permuted_exactly_as_llama_cpp(gguf_models, gguf_out, hf_class):
    baked = gguf_models[hf_class]
    hf = load_file(baked / "model.safetensors")
    ts = tensors(converted(baked, gguf_out, "f32", "pair"))
    config = read_config(baked)
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    for layer in range(config["num_hidden_layers"]):
        q, k, v = (hf[f"model.layers.{layer}.self_attn.{p}_proj.weight"] for p in "qkv")
        np.testing.assert_array_equal(ts[f"blk.{layer}.attn_q.weight"].data, llama_cpp_permute(q, n_head, n_head))
        np.testing.assert_array_equal(ts[f"blk.{layer}.attn_k.weight"].data, llama_cpp_permute(k, n_head, n_kv))
        np.testing.assert_array_equal(ts[f"blk.{layer}.attn_v.weight"].data, v)


def test_qwen2_single_set_permutes_weights_and_biases(gguf_models, gguf_out):
    baked = gguf_models["Qwen2ForCausalLM"]
    hf = load_file(baked / "model.safetensors")
    ts = tensors(converted(baked, gguf_out, "f32", "long"))
    assert "rope_freqs.weight" in ts and "rope_factors_long.weight" not in ts
    np.testing.assert_array_equal(ts["rope_freqs.weight"].data,
                                  np.float32(spec_from_config(read_config(baked)).long_factor))
    bias = hf["model.layers.0.self_attn.k_proj.bias"]
    np.testing.assert_array_equal(ts["blk.0.attn_k.bias"].data, llama_cpp_permute(bias, 4, 2))
    assert "llama.rope.scaling.type" not in fields(converted(baked, gguf_out, "f32", "long"))


def test_qwen2_pair_is_arch_llama_with_biases_and_both_sets(gguf_models, gguf_out):
    """llama.cpp's qwen2 graph loads no factors; its llama graph loads the pair and optional q/k/v biases."""
    baked = gguf_models["Qwen2ForCausalLM"]
    hf = load_file(baked / "model.safetensors")
    path = converted(baked, gguf_out, "f32", "pair")
    ts, kv = tensors(path), fields(path)
    assert kv["general.architecture"] == "llama" and kv["llama.rope.scaling.type"] == "longrope"
    assert {"rope_factors_long.weight", "rope_factors_short.weight"} <= set(ts) and "rope_freqs.weight" not in ts
    for p in "qkv":
        assert f"blk.1.attn_{p}.bias" in ts
    np.testing.assert_array_equal(ts["blk.1.attn_q.bias"].data,
                                  llama_cpp_permute(hf["model.layers.1.self_attn.q_proj.bias"], 4, 4))
    np.testing.assert_array_equal(ts["blk.1.attn_v.bias"].data, hf["model.layers.1.self_attn.v_proj.bias"])


def test_gguf_with_keys_but_no_factor_tensors_is_reported(gguf_models, gguf_out, tmp_path):
    """Our keys but no factor tensors: llama.cpp would run plain RoPE; facts and inspect say so."""
    from longrope_convert.formats.artifact_spec import NotLongRopeError, read_any_spec
    from longrope_convert.formats.gguf.reader import read_gguf_facts

    path = converted(gguf_models["LlamaForCausalLM"], gguf_out, "f32", "pair")
    assert read_gguf_facts(path).has_factors and read_gguf_facts(path).missing_factors is None
    stripped = tmp_path / "stripped.gguf"
    strip_tensors(path, stripped, FACTOR_TENSORS)
    facts = read_gguf_facts(stripped)
    assert not facts.has_factors and "rope factors missing" in facts.missing_factors
    with pytest.raises(NotLongRopeError, match="keys but rope factors missing"):
        read_any_spec(stripped)
    neither = tmp_path / "neither.gguf"
    strip_tensors(path, neither, FACTOR_TENSORS, ("GGUF.", "longrope_convert."))
    with pytest.raises(NotLongRopeError, match="no longrope_convert keys, no factor tensors"):
        read_any_spec(neither)
    untyped = tmp_path / "untyped.gguf"  # llama arch ignores the pair without rope.scaling.type = longrope
    strip_tensors(path, untyped, set(), ("GGUF.", "llama.rope.scaling.type"))
    assert "only when llama.rope.scaling.type = longrope" in read_gguf_facts(untyped).missing_factors
    assert read_gguf_facts(converted(gguf_models["Qwen2ForCausalLM"], gguf_out, "f32", "long")).has_factors


def test_phi3_fused_tensors_are_kept_as_llama_cpp_expects(gguf_models, gguf_out):
    baked = gguf_models["Phi3ForCausalLM"]
    hf = load_file(baked / "model.safetensors")
    ts = tensors(converted(baked, gguf_out, "f32", "pair"))
    np.testing.assert_array_equal(ts["blk.0.attn_qkv.weight"].data, hf["model.layers.0.self_attn.qkv_proj.weight"])
    np.testing.assert_array_equal(ts["blk.1.ffn_up.weight"].data, hf["model.layers.1.mlp.gate_up_proj.weight"])


def test_f16_bits_equal_float32_rounding(gguf_models, gguf_out, tmp_path):
    """bf16 source -> f16 through the lookup table gives the bits of numpy's float32 -> float16 rounding."""
    from longrope_convert.formats.gguf.dtypes import _bf16_to_f16_table

    bits = np.arange(65536, dtype=np.uint32) << 16
    with np.errstate(over="ignore", invalid="ignore"):
        expected = bits.view(np.float32).astype(np.float16)
    np.testing.assert_array_equal(_bf16_to_f16_table().view(np.uint16), expected.view(np.uint16))


def test_explicit_attention_factor_is_honoured(gguf_models, tmp_path):
    pytest.importorskip("llama_cpp")
    from dataclasses import replace

    from longrope_convert.formats.factor_set import FactorSet

    from .gguf_fixtures import llama_cpp_comparison

    baked = gguf_models["LlamaForCausalLM"]
    out = tmp_path / "explicit.gguf"
    convert_hf_to_gguf(baked, out, SpecRequest(attention_factor=1.3), outtype="f32", progress=False)
    assert fields(out)["llama.rope.scaling.attn_factor"] == pytest.approx(1.3)
    spec = read_gguf_spec(out)
    assert spec.explicit_attention_factor == pytest.approx(1.3)
    expected = replace(spec_from_config(read_config(baked)), explicit_attention_factor=1.3)
    assert llama_cpp_comparison(out, baked, 200, 256, FactorSet.SHORT, expected).relative_l2 < 1e-4
    assert llama_cpp_comparison(out, baked, 200, 256, FactorSet.SHORT).relative_l2 > 1e-2


def test_plain_checkpoint_plus_factor_options_equals_baked(gguf_models, gguf_out, tmp_path):
    baked = gguf_models["LlamaForCausalLM"]
    plain = baked.parent / "plain"
    factors = baked.parent
    request = SpecRequest(long_factors=factors / "long_factors.csv", short_factors=factors / "short_factors.csv",
                          max_position_embeddings=1024)
    out = tmp_path / "from-plain.gguf"
    convert_hf_to_gguf(plain, out, request, outtype="f32", no_vocab=True, progress=False)
    assert read_gguf_spec(out) == read_gguf_spec(converted(baked, gguf_out, "f32", "pair"))
    ours, baked_ts = tensors(out), tensors(converted(baked, gguf_out, "f32", "pair"))
    assert set(ours) == set(baked_ts)
    for name in ours:
        np.testing.assert_array_equal(ours[name].data, baked_ts[name].data)


def test_output_independent_of_chunk_size(gguf_models, gguf_out, tmp_path, monkeypatch):
    """Tiny chunks (a head, a few rows) give the very bytes of one-chunk-per-tensor conversion."""
    baked = gguf_models["MistralForCausalLM"]
    for outtype in ("f16", "q8_0"):
        reference = converted(baked, gguf_out, outtype, "pair").read_bytes()
        monkeypatch.setattr(gguf_tensors, "CHUNK_BYTES", 100)
        monkeypatch.setattr(gguf_tensors.TensorPlan.chunks, "__defaults__", (100,))
        out = tmp_path / f"small-chunks-{outtype}.gguf"
        convert_hf_to_gguf(baked, out, outtype=outtype, progress=False)
        assert out.read_bytes() == reference
        monkeypatch.undo()


@pytest.mark.parametrize("l_orig, top, long_c, short_c", [(256, 1024, 1024, 256), (4096, 131072, 131072, 4096),
                                                         (4000, 128000, 128000, 3840), (200, 800, 800, None)])
def test_model_card_llama_cpp_recipe(l_orig, top, long_c, short_c):
    """-c N gives long iff N rounded up to 256 > L_orig; the card's short example must round to <= L_orig."""
    from longrope_convert.formats.factor_set import FactorSet, choose_by_context_size
    from longrope_convert.formats.hf.model_card import llama_cpp_recipe
    from longrope_convert.formats.spec import LongRopeSpec

    spec = LongRopeSpec(long_factor=(2.0,) * 8, short_factor=(1.0,) * 8, original_max_position_embeddings=l_orig,
                        max_position_embeddings=top, rope_theta=10000.0, rotary_dim=16)
    text = llama_cpp_recipe(spec)
    assert f"-c {long_c}      # long factors" in text and "| 0 (the trained context" in text
    assert choose_by_context_size(long_c, l_orig) is FactorSet.LONG
    if short_c is None:
        assert "no -c gives the short factors" in text
    else:
        assert f"-c {short_c}      # short factors" in text
        assert choose_by_context_size(short_c, l_orig) is FactorSet.SHORT
