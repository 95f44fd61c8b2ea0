"""Load a checkpoint's safetensors straight into a uniform per-layer layout for the reference decoder.

Architecture differences (fused qkv, fused gate/up, biases) are undone here, so the decoder has one code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from longrope_convert.formats.architectures import Architecture
from longrope_convert.formats.checkpoint import checkpoint_tensors
from longrope_convert.formats.errors import CheckpointError
from longrope_convert.formats.hf_config import ModelGeometry


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    post_norm: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    q_bias: torch.Tensor | None = None
    k_bias: torch.Tensor | None = None
    v_bias: torch.Tensor | None = None
    o_bias: torch.Tensor | None = None
    gate_bias: torch.Tensor | None = None
    up_bias: torch.Tensor | None = None
    down_bias: torch.Tensor | None = None


@dataclass
class DecoderWeights:
    embed: torch.Tensor
    layers: list[LayerWeights]
    final_norm: torch.Tensor
    lm_head: torch.Tensor


class _TensorSource:
    """Reads named tensors from the checkpoint's shards, converting dtype and device."""

    def __init__(self, folder: Path, dtype: torch.dtype, device: str):
        self.infos = checkpoint_tensors(folder)
        self.dtype, self.device = dtype, device

    def has(self, name: str) -> bool:
        return name in self.infos

    def get(self, name: str) -> torch.Tensor:
        info = self.infos.get(name)
        if info is None:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint")
        with safe_open(str(info.file), framework="pt") as f:
            return f.get_tensor(name).to(device=self.device, dtype=self.dtype)

    def maybe(self, name: str) -> torch.Tensor | None:
        return self.get(name) if self.has(name) else None


def load_decoder_weights(
    folder: Path, arch: Architecture, geo: ModelGeometry, dtype: torch.dtype, device: str
) -> DecoderWeights:
    src = _TensorSource(folder, dtype, device)
    layers = [_load_layer(src, f"model.layers.{i}", arch, geo) for i in range(geo.num_layers)]
    embed = src.get("model.embed_tokens.weight")
    lm_head = src.maybe("lm_head.weight")
    if lm_head is None:
        if not geo.tie_word_embeddings:
            raise CheckpointError("lm_head.weight is missing and tie_word_embeddings is false", folder)
        lm_head = embed
    return DecoderWeights(embed=embed, layers=layers, final_norm=src.get("model.norm.weight"), lm_head=lm_head)


def _load_layer(src: _TensorSource, p: str, arch: Architecture, geo: ModelGeometry) -> LayerWeights:
    q_out, kv_out = geo.num_heads * geo.head_dim, geo.num_kv_heads * geo.head_dim
    if arch.fused_qkv:
        qkv = src.get(f"{p}.self_attn.qkv_proj.weight")
        q, k, v = qkv.split([q_out, kv_out, kv_out], dim=0)
        biases = (None, None, None)
    else:
        q, k, v = (src.get(f"{p}.self_attn.{n}_proj.weight") for n in "qkv")
        biases = tuple(src.maybe(f"{p}.self_attn.{n}_proj.bias") for n in "qkv")
    if arch.fused_gate_up:
        gate, up = src.get(f"{p}.mlp.gate_up_proj.weight").chunk(2, dim=0)
        gate_bias = up_bias = None
    else:
        gate, up = src.get(f"{p}.mlp.gate_proj.weight"), src.get(f"{p}.mlp.up_proj.weight")
        gate_bias, up_bias = src.maybe(f"{p}.mlp.gate_proj.bias"), src.maybe(f"{p}.mlp.up_proj.bias")
    return LayerWeights(
        input_norm=src.get(f"{p}.input_layernorm.weight"),
        q=q, k=k, v=v,
        o=src.get(f"{p}.self_attn.o_proj.weight"),
        post_norm=src.get(f"{p}.post_attention_layernorm.weight"),
        gate=gate, up=up,
        down=src.get(f"{p}.mlp.down_proj.weight"),
        q_bias=biases[0], k_bias=biases[1], v_bias=biases[2],
        o_bias=src.maybe(f"{p}.self_attn.o_proj.bias"),
        gate_bias=gate_bias, up_bias=up_bias, down_bias=src.maybe(f"{p}.mlp.down_proj.bias"),
    )
