"""The architecture registry: one entry per supported HF class, holding what every format needs to know.

A new architecture is a new `Architecture(...)` line here plus code only where it differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class Architecture:
    hf_class: str
    model_type: str
    # "phi3": rope_scaling must be exactly {type, short_factor, long_factor} for transformers 4.x.
    # "llama": rope_scaling carries rope_type/type/factor/L_orig (+attention_factor) and top-level mirrors.
    config_style: str
    fused_qkv: bool = False  # qkv_proj instead of q_proj/k_proj/v_proj
    fused_gate_up: bool = False  # gate_up_proj instead of gate_proj/up_proj
    qkv_bias: bool = False  # biases on q/k/v projections regardless of config flags
    supports_explicit_attention_factor: bool = True


ARCHITECTURES: dict[str, Architecture] = {
    a.hf_class: a
    for a in (
        Architecture("LlamaForCausalLM", "llama", "llama"),
        Architecture("MistralForCausalLM", "mistral", "llama"),
        Architecture("Qwen2ForCausalLM", "qwen2", "llama", qkv_bias=True),
        Architecture(
            "Phi3ForCausalLM",
            "phi3",
            "phi3",
            fused_qkv=True,
            fused_gate_up=True,
            supports_explicit_attention_factor=False,
        ),
    )
}


def architecture_for(config: dict, source: str = "config.json") -> Architecture:
    """Look up the registry entry named by config['architectures'][0]; refuse anything else."""
    names = config.get("architectures") or []
    if not isinstance(names, list) or not names:
        raise UnsupportedArchitectureError("config has no 'architectures' list; cannot tell the model class", source)
    name = names[0]
    if name not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitectureError(f"architecture {name!r} is not supported (supported: {supported})", source)
    return ARCHITECTURES[name]
