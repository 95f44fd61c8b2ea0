"""Every registered architecture is covered end to end: a tiny demo model, a GGUF mapping or an explicit refusal,
an ONNX graph and a reference path, all driven by the one description in formats/architectures.py."""

import pytest
import torch
from longrope_convert.convert.demo.models import DEMO_MODELS
from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, tiny_config, write_tiny_checkpoint
from longrope_convert.formats.architectures import ARCHITECTURES, LINEAR, Role
from longrope_convert.formats.gguf.layouts import LAYOUTS, gguf_layout
from longrope_convert.formats.hf.checkpoint import open_checkpoint
from longrope_convert.formats.hf.geometry import geometry
from longrope_convert.formats.hf.weights import WeightReader

ARCHS = tuple(ARCHITECTURES)


@pytest.mark.parametrize("hf_class", ARCHS)
def test_every_architecture_has_a_tiny_demo_model(hf_class):
    assert hf_class in DEMO_MODELS


@pytest.mark.parametrize("hf_class", ARCHS)
def test_every_architecture_has_a_gguf_mapping_or_an_explicit_refusal(hf_class):
    arch = ARCHITECTURES[hf_class]
    assert arch.gguf_single_arch in LAYOUTS
    assert arch.gguf_pair_arch in LAYOUTS or (arch.gguf_pair_arch is None and arch.gguf_pair_refusal)
    for sets in ("pair", "long", "short"):
        try:
            layout = gguf_layout(arch, sets, rotary_dim=16, head_dim=16)
        except Exception as exc:  # the refusal names the architecture and says what to do instead
            assert sets == "pair" and hf_class in str(exc) and "--factor-sets" in str(exc)
        else:
            assert layout.name in LAYOUTS


@pytest.mark.parametrize("hf_class", ARCHS)
def test_tensor_slots_cover_exactly_what_the_generator_writes(tmp_path, hf_class):
    """The generator writes every required slot; opening checks every tensor against the description."""
    folder = write_tiny_checkpoint(tmp_path / "m", hf_class, seed=3)
    checkpoint = open_checkpoint(folder)
    required = {s.name for s in checkpoint.arch.tensor_slots(checkpoint.geometry) if s.required}
    assert set(checkpoint.tensors) == required
    assert all(len(s.shape) == 1 for s in checkpoint.slots().values() if s.is_bias)


@pytest.mark.parametrize("hf_class", ARCHS)
def test_canonical_weights_undo_fusion(tmp_path, hf_class):
    """The shared reader returns split q/k/v and gate/up in HF orientation whatever the architecture stores."""
    folder = write_tiny_checkpoint(tmp_path / "m", hf_class, seed=3)
    checkpoint = open_checkpoint(folder)
    g = checkpoint.geometry
    layer = WeightReader(checkpoint).layer(1)
    assert layer.q.shape == (g.num_heads * g.head_dim, g.hidden_size)
    assert layer.k.shape == layer.v.shape == (g.num_kv_heads * g.head_dim, g.hidden_size)
    if g.num_experts:  # sparse MoE (PhiMoE): router + per-expert gate/up/down; LayerNorm biases are stored too
        assert layer.router.shape == (g.num_experts, g.hidden_size) and len(layer.experts) == g.num_experts
        assert all(e[Role.EXPERT_GATE].shape == (g.intermediate_size, g.hidden_size) for e in layer.experts)
        assert set(layer.biases) == set(checkpoint.arch.required_biases)  # LayerNorm biases included
        return
    assert layer.gate.shape == layer.up.shape == (g.intermediate_size, g.hidden_size)
    assert set(layer.biases) == set(checkpoint.arch.required_biases)


def test_fused_rows_split_in_storage_order(tmp_path):
    """Phi-3's qkv_proj rows are q, then k, then v; gate_up_proj rows are gate, then up."""
    from safetensors.torch import load_file

    folder = write_tiny_checkpoint(tmp_path / "phi", "Phi3ForCausalLM", seed=5)
    stored = load_file(folder / "model.safetensors")
    layer = WeightReader(open_checkpoint(folder)).layer(0)
    qkv = stored["model.layers.0.self_attn.qkv_proj.weight"].numpy()
    gate_up = stored["model.layers.0.mlp.gate_up_proj.weight"].numpy()
    assert (qkv[: layer.q.shape[0]] == layer.q).all() and (qkv[-layer.v.shape[0]:] == layer.v).all()
    assert (gate_up[: layer.gate.shape[0]] == layer.gate).all() and (gate_up[layer.gate.shape[0]:] == layer.up).all()


@pytest.mark.parametrize("hf_class", ARCHS)
def test_reference_reads_every_architecture(tmp_path, hf_class):
    from longrope_convert.verify.reference_model import ReferenceDecoder

    folder = write_tiny_checkpoint(tmp_path / "m", hf_class, seed=3)
    logits = ReferenceDecoder(folder, torch.float32).forward(torch.arange(8)[None]).logits
    assert logits.shape == (1, 8, TinyShape().vocab_size) and torch.isfinite(logits).all()


def test_linear_roles_have_shapes_for_every_geometry():
    geo = geometry(tiny_config(ARCHITECTURES["LlamaForCausalLM"], TinyShape()))
    slots = ARCHITECTURES["LlamaForCausalLM"].layer_slots(0, geo)
    assert {s.role for s in slots if not s.is_bias} == {Role.INPUT_NORM, Role.POST_NORM} | (
        LINEAR - {Role.QKV, Role.GATE_UP})
