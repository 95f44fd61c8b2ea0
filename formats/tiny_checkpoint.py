"""Seeded tiny random checkpoints in the exact HF on-disk layout of each supported architecture.

The weights are written directly with safetensors (no transformers modeling code), so the same bytes come
out on every transformers version. Scales are chosen so logits are well separated (top-1 is meaningful).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .architectures import ARCHITECTURES, Architecture


@dataclass(frozen=True)
class TinyShape:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    vocab_size: int = 512
    original_max_position_embeddings: int = 256
    partial_rotary_factor: float = 1.0


def tiny_config(arch: Architecture, shape: TinyShape) -> dict:
    """A plain-RoPE config.json for `arch` with context L_orig (the 'before LongRoPE' checkpoint)."""
    config = {
        "architectures": [arch.hf_class],
        "model_type": arch.model_type,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "vocab_size": shape.vocab_size,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": shape.original_max_position_embeddings,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
    }
    if arch.config_style == "llama":
        config["head_dim"] = shape.head_dim
    if arch.model_type in ("mistral", "qwen2", "phi3"):
        config["sliding_window"] = None
    if arch.model_type == "qwen2":
        config["use_sliding_window"] = False
        config["max_window_layers"] = shape.num_layers
    if arch.model_type == "phi3":
        config["original_max_position_embeddings"] = shape.original_max_position_embeddings
        config["partial_rotary_factor"] = shape.partial_rotary_factor
        config["resid_pdrop"] = 0.0
        config["embd_pdrop"] = 0.0
    return config


def tiny_tensors(arch: Architecture, shape: TinyShape, seed: int, dtype=None) -> dict:
    """Random weights named as HF names them for `arch` (torch tensors, contiguous)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.float32
    h, i, hd = shape.hidden_size, shape.intermediate_size, shape.head_dim
    q_out, kv_out = shape.num_heads * hd, shape.num_kv_heads * hd

    def linear(out_f: int, in_f: int) -> "torch.Tensor":
        return torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)

    def norm() -> "torch.Tensor":
        return 1.0 + 0.1 * torch.randn(h, generator=gen)

    t = {"model.embed_tokens.weight": torch.randn(shape.vocab_size, h, generator=gen)}
    for layer in range(shape.num_layers):
        p = f"model.layers.{layer}"
        t[f"{p}.input_layernorm.weight"] = norm()
        t[f"{p}.post_attention_layernorm.weight"] = norm()
        if arch.fused_qkv:
            t[f"{p}.self_attn.qkv_proj.weight"] = linear(q_out + 2 * kv_out, h)
        else:
            for name, out_f in (("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)):
                t[f"{p}.self_attn.{name}.weight"] = linear(out_f, h)
                if arch.qkv_bias:
                    t[f"{p}.self_attn.{name}.bias"] = 0.1 * torch.randn(out_f, generator=gen)
        t[f"{p}.self_attn.o_proj.weight"] = linear(h, q_out)
        if arch.fused_gate_up:
            t[f"{p}.mlp.gate_up_proj.weight"] = linear(2 * i, h)
        else:
            t[f"{p}.mlp.gate_proj.weight"] = linear(i, h)
            t[f"{p}.mlp.up_proj.weight"] = linear(i, h)
        t[f"{p}.mlp.down_proj.weight"] = linear(h, i)
    t["model.norm.weight"] = norm()
    t["lm_head.weight"] = linear(shape.vocab_size, h) * 4.0  # sharpen logits so top-1 is well defined
    return {k: v.to(dtype).contiguous() for k, v in t.items()}


def write_tiny_checkpoint(
    folder: Path, hf_class: str = "LlamaForCausalLM", shape: TinyShape | None = None, seed: int = 0, dtype=None
) -> Path:
    """Write config.json + model.safetensors + generation_config.json for a tiny plain-RoPE model."""
    from safetensors.torch import save_file

    arch = ARCHITECTURES[hf_class]
    shape = shape or TinyShape()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(arch, shape)
    if dtype is not None:
        config["torch_dtype"] = str(dtype).replace("torch.", "")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}) + "\n")
    save_file(tiny_tensors(arch, shape, seed, dtype), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
