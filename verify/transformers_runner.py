"""Run a checkpoint through transformers itself (the runtime users load from a hub), fresh each time."""

from __future__ import annotations

from pathlib import Path

import torch

from .transformers_attention import ATTENTION_NAME, register_longrope_attention


def load_transformers_model(folder: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu",
                            attn_implementation: str = "eager", device_map: str | dict | None = None):
    """A fresh AutoModelForCausalLM in eval mode; never trust_remote_code; eager attention unless told
    otherwise ("longrope_sdpa", transformers' SDPA with KV heads expanded on CUDA, for long GPU cases)."""
    import transformers
    from transformers import AutoModelForCausalLM

    _quiet_transformers(transformers)
    if attn_implementation == ATTENTION_NAME:
        register_longrope_attention()
    kwargs = {"attn_implementation": attn_implementation, "trust_remote_code": False}
    major = int(transformers.__version__.split(".")[0])
    kwargs["dtype" if major >= 5 else "torch_dtype"] = dtype
    if device_map is not None:  # accelerate places the modules (several GPUs); no .to() afterwards
        return AutoModelForCausalLM.from_pretrained(str(folder), device_map=device_map, **kwargs).eval()
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    return model.to(device).eval()


def _quiet_transformers(transformers) -> None:
    """Our report says what matters; transformers' loading bars and its Phi-3 `factor` advice are noise here
    (the 4.x-compatible Phi-3 layout cannot carry `factor`, and 5.x loads it identically)."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@torch.inference_mode()
def transformers_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of one full forward (no cache), positions 0..T-1."""
    device = next(model.parameters()).device
    return model(input_ids=input_ids.to(device), use_cache=False).logits


def rotary_cos_sin(model, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cos/sin transformers' own rotary module produces for positions 0..length-1."""
    rotary = model.model.rotary_emb
    positions = torch.arange(length)[None, :]
    dummy = torch.zeros(1, length, 1, dtype=torch.float32)
    cos, sin = rotary(dummy, positions)
    return cos[0], sin[0]
