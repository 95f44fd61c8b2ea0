"""Checkpoint tensors as numpy arrays laid out for the ONNX decoder (MatMul wants [in, out]; q/k/v and gate/up
fused so each is one MatMul). Read straight from safetensors bytes: no torch, bf16 handled by bit shifting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .architectures import Architecture
from .checkpoint import TensorInfo, bf16_bits_to_float32
from .errors import CheckpointError
from .hf_config import ModelGeometry


def read_array(info: TensorInfo) -> np.ndarray:
    """One tensor, memory-mapped from its file: F32/F16 as stored, BF16/F64 as float32."""
    raw = np.memmap(info.file, dtype=np.uint8, mode="r", offset=info.begin, shape=(info.end - info.begin,))
    if info.dtype == "F32":
        array = raw.view(np.float32)
    elif info.dtype == "F16":
        array = raw.view(np.float16)
    elif info.dtype == "BF16":
        array = bf16_bits_to_float32(raw.view(np.uint16))
    elif info.dtype == "F64":
        array = raw.view(np.float64).astype(np.float32)
    else:
        raise CheckpointError(f"tensor {info.name!r} has dtype {info.dtype}, expected a float type", info.file)
    return array.reshape(info.shape)


@dataclass
class LayerArrays:
    """One decoder layer, matrices already transposed to [in, out]."""

    input_norm: np.ndarray
    qkv: np.ndarray  # [hidden, q_out + 2 kv_out]
    qkv_bias: np.ndarray | None
    o: np.ndarray
    o_bias: np.ndarray | None
    post_norm: np.ndarray
    gate_up: np.ndarray  # [hidden, 2 intermediate], gate first
    down: np.ndarray


class WeightReader:
    """Named, shape-checked access to a checkpoint's tensors."""

    def __init__(self, tensors: dict[str, TensorInfo], arch: Architecture, geo: ModelGeometry):
        self.tensors, self.arch, self.geo = tensors, arch, geo

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        info = self.tensors.get(name)
        if info is None:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint")
        if tuple(info.shape) != tuple(shape):
            raise CheckpointError(f"tensor {name!r} has shape {list(info.shape)}, config implies {list(shape)}",
                                  info.file)
        return read_array(info)

    def maybe(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        return self.get(name, shape) if name in self.tensors else None

    def embedding(self) -> np.ndarray:
        g = self.geo
        return self.get("model.embed_tokens.weight", (g.vocab_size, g.hidden_size))

    def final_norm(self) -> np.ndarray:
        return self.get("model.norm.weight", (self.geo.hidden_size,))

    def lm_head(self) -> np.ndarray:
        """[hidden, vocab]; the embedding when the checkpoint ties them."""
        g = self.geo
        head = self.maybe("lm_head.weight", (g.vocab_size, g.hidden_size))
        if head is None:
            if not g.tie_word_embeddings:
                raise CheckpointError("lm_head.weight is missing and tie_word_embeddings is false")
            head = self.embedding()
        return head.T

    def layer(self, i: int) -> LayerArrays:
        g, p = self.geo, f"model.layers.{i}"
        h, inter = g.hidden_size, g.intermediate_size
        q_out, kv_out = g.num_heads * g.head_dim, g.num_kv_heads * g.head_dim
        if self.arch.fused_qkv:
            qkv = self.get(f"{p}.self_attn.qkv_proj.weight", (q_out + 2 * kv_out, h))
            qkv_bias = self.maybe(f"{p}.self_attn.qkv_proj.bias", (q_out + 2 * kv_out,))
        else:
            outs = {"q": q_out, "k": kv_out, "v": kv_out}
            qkv = np.concatenate([self.get(f"{p}.self_attn.{n}_proj.weight", (o, h)) for n, o in outs.items()])
            biases = [self.maybe(f"{p}.self_attn.{n}_proj.bias", (o,)) for n, o in outs.items()]
            qkv_bias = _fused_bias(biases, list(outs.values()))
            if self.arch.qkv_bias and qkv_bias is None:
                raise CheckpointError(f"{self.arch.hf_class} layer {i} has no q/k/v biases")
        if self.arch.fused_gate_up:
            gate_up = self.get(f"{p}.mlp.gate_up_proj.weight", (2 * inter, h))
        else:
            gate_up = np.concatenate([self.get(f"{p}.mlp.{n}_proj.weight", (inter, h)) for n in ("gate", "up")])
        return LayerArrays(
            input_norm=self.get(f"{p}.input_layernorm.weight", (h,)),
            qkv=qkv.T, qkv_bias=qkv_bias,
            o=self.get(f"{p}.self_attn.o_proj.weight", (h, q_out)).T,
            o_bias=self.maybe(f"{p}.self_attn.o_proj.bias", (h,)),
            post_norm=self.get(f"{p}.post_attention_layernorm.weight", (h,)),
            gate_up=gate_up.T,
            down=self.get(f"{p}.mlp.down_proj.weight", (h, inter)).T,
        )


def _fused_bias(biases: list[np.ndarray | None], sizes: list[int]) -> np.ndarray | None:
    """q/k/v biases as one vector (zeros for a missing one), or None when there are none."""
    if all(b is None for b in biases):
        return None
    dtype = next(b.dtype for b in biases if b is not None)
    return np.concatenate([b if b is not None else np.zeros(n, dtype) for b, n in zip(biases, sizes)])
