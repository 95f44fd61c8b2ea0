"""The independent reference decoder agrees with transformers, and the comparison can fail."""

import pytest
import torch
from longrope_convert.formats.architectures import ARCHITECTURES
from longrope_convert.formats.factor_set import FactorSet
from longrope_convert.verify.metrics import compare_logits
from longrope_convert.verify.reference_model import ReferenceDecoder
from longrope_convert.verify.transformers_runner import (
    load_transformers_model,
    transformers_logits,
)

from ..conftest import expect_known_transformers_divergence

ARCHS = tuple(ARCHITECTURES)  # every registered architecture
SHORT, LONG = 200, 600  # L_orig is 256


def ids(length: int, vocab: int = 512) -> torch.Tensor:
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(length))


@pytest.fixture(scope="module")
def hf_models(demo_models):
    return {name: load_transformers_model(m.baked) for name, m in demo_models.items()}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("length, expected_set", [(SHORT, FactorSet.SHORT), (LONG, FactorSet.LONG)])
def test_float32_reference_matches_transformers(request, demo_models, hf_models, arch, length, expected_set):
    expect_known_transformers_divergence(request, demo_models[arch].baked, length)
    reference = ReferenceDecoder(demo_models[arch].baked, torch.float32)
    result = reference.forward(ids(length))
    assert result.factor_set is expected_set
    cmp = compare_logits(result.logits, transformers_logits(hf_models[arch], ids(length)))
    assert cmp.relative_l2 <= 1e-5
    assert cmp.top1_agreement == 1.0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("length", [SHORT, LONG])
def test_swapped_factor_sets_fail_the_comparison(request, demo_models, hf_models, arch, length):
    expect_known_transformers_divergence(request, demo_models[arch].baked, length)
    good = ReferenceDecoder(demo_models[arch].baked, torch.float32)
    swapped = ReferenceDecoder(demo_models[arch].baked, torch.float32, spec=good.spec.with_factors_swapped())
    cmp = compare_logits(swapped.forward(ids(length)).logits, transformers_logits(hf_models[arch], ids(length)))
    assert cmp.relative_l2 > 1e-2


def test_float64_reference_is_close_to_float32(demo_models):
    folder = demo_models["Phi3ForCausalLM"].baked
    r64 = ReferenceDecoder(folder, torch.float64).forward(ids(LONG)).logits
    r32 = ReferenceDecoder(folder, torch.float32).forward(ids(LONG)).logits
    assert r64.dtype == torch.float64
    assert 0 < compare_logits(r64, r32).relative_l2 < 1e-4


def test_kv_cache_decode_equals_full_forward_on_one_side_of_l_orig(demo_models):
    reference = ReferenceDecoder(demo_models["LlamaForCausalLM"].baked, torch.float64)
    tokens = ids(LONG)
    prefix = reference.forward(tokens[:, :-1])
    step = reference.forward(tokens[:, -1:], cache=prefix.cache)
    full = reference.forward(tokens, last_only=True)
    assert step.factor_set is FactorSet.LONG
    assert compare_logits(full.logits, step.logits).relative_l2 < 1e-12


def test_decode_across_l_orig_keeps_short_rotated_keys(demo_models):
    """Cached keys are never re-rotated: step 257 differs (slightly) from a 257-token re-forward."""
    reference = ReferenceDecoder(demo_models["LlamaForCausalLM"].baked, torch.float64)
    tokens = ids(257)
    prefix = reference.forward(tokens[:, :256])
    step = reference.forward(tokens[:, 256:], cache=prefix.cache)
    full = reference.forward(tokens, last_only=True)
    assert prefix.factor_set is FactorSet.SHORT and step.factor_set is FactorSet.LONG
    drift = compare_logits(full.logits, step.logits).relative_l2
    assert 1e-6 < drift < 0.5


def test_llama_with_attention_and_mlp_biases(tmp_path, llama_model):
    """Biases are read from the checkpoint whatever the architecture; config flags only tell transformers."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "biased"
    shutil.copytree(llama_model.baked, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(attention_bias=True, mlp_bias=True)
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(folder / "model.safetensors"))
    gen = torch.Generator().manual_seed(7)
    for name in [n for n in tensors if n.endswith("_proj.weight")]:
        tensors[name.replace(".weight", ".bias")] = 0.1 * torch.randn(tensors[name].shape[0], generator=gen)
    (folder / "model.safetensors").unlink()  # it is a hard link to the demo's file: never write through it
    save_file(tensors, str(folder / "model.safetensors"))
    for length in (SHORT, LONG):
        ref = ReferenceDecoder(folder, torch.float32).forward(ids(length)).logits
        hf = transformers_logits(load_transformers_model(folder), ids(length))
        assert compare_logits(ref, hf).relative_l2 <= 1e-5
