"""Seeded tiny random checkpoints in the exact HF on-disk layout of each supported architecture.

The weights are written directly with safetensors (no transformers modeling code), so the same bytes come
out on every transformers version. Scales are chosen so logits are well separated (top-1 is meaningful).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ...formats.architectures import ARCHITECTURES, NORMS, Architecture, Role, TensorSlot
from ...formats.hf.geometry import geometry


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
    config.update(arch.plain_config_keys)
    if arch.config_style == "llama":
        config["head_dim"] = shape.head_dim
    else:  # Phi-3 style keeps L_orig and partial rotary at top level
        config["original_max_position_embeddings"] = shape.original_max_position_embeddings
        config["partial_rotary_factor"] = shape.partial_rotary_factor
    return config


def tiny_tensors(arch: Architecture, shape: TinyShape, seed: int, dtype=None) -> dict:
    """Random weights for every tensor the architecture description lists (required biases only), named as HF
    names them (torch tensors, contiguous). Embedding first, then the layers, the final norm and the head."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    geo = geometry(tiny_config(arch, shape))

    def random(slot: TensorSlot) -> "torch.Tensor":
        if slot.is_bias:
            return 0.1 * torch.randn(*slot.shape, generator=gen)
        if slot.role in NORMS:
            return 1.0 + 0.1 * torch.randn(*slot.shape, generator=gen)
        if slot.role is Role.EMBED:
            return torch.randn(*slot.shape, generator=gen)
        scale = 4.0 if slot.role is Role.LM_HEAD else 1.0  # sharpen logits so top-1 is well defined
        return torch.randn(*slot.shape, generator=gen) / math.sqrt(slot.shape[1]) * scale

    first, *rest = arch.global_slots(geo)
    slots = [first] + [s for i in range(geo.num_layers) for s in arch.layer_slots(i, geo)] + rest
    dtype = dtype or torch.float32
    return {s.name: random(s).to(dtype).contiguous() for s in slots if s.required}


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
