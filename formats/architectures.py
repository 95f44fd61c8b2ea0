"""What each supported architecture looks like on disk: the one description every format and the reference read.

An architecture is a small class registered with `@register`: its HF tensor names (per role, per layer), which
projections are fused, which biases it must or may carry, the config layout transformers 4.x/5.x accept, the
sliding-window rule per layer, and the llama.cpp architecture its GGUF is written as. The shared weight reader
(`formats/hf/weights.py`), the GGUF tensor plan, the ONNX exporter, the reference decoder and the demo's tiny
checkpoint generator all ask this description; none spells a tensor name itself. Where an architecture's math
differs, it overrides a hook (`layer_windows`, `tensor_slots`), as llama.cpp's `conversion/` classes do.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .errors import ConfigError, UnsupportedArchitectureError

if TYPE_CHECKING:  # pragma: no cover
    from .hf.geometry import ModelGeometry


class Role(str, enum.Enum):
    """What a tensor is, whatever an architecture calls it."""

    EMBED = "embed"
    FINAL_NORM = "final_norm"
    LM_HEAD = "lm_head"
    INPUT_NORM = "input_norm"
    POST_NORM = "post_norm"
    Q = "q"
    K = "k"
    V = "v"
    QKV = "qkv"  # q, k and v stacked by rows
    O = "o"
    GATE = "gate"
    UP = "up"
    GATE_UP = "gate_up"  # gate and up stacked by rows, gate first
    DOWN = "down"
    ROUTER = "router"  # sparse MoE: [num_experts, hidden] router logits (PhiMoE block_sparse_moe.gate)
    EXPERT_GATE = "expert_gate"  # one expert's gate (w1), up (w3) and down (w2); slots carry the expert index
    EXPERT_UP = "expert_up"
    EXPERT_DOWN = "expert_down"


EXPERT_ROLES = (Role.EXPERT_GATE, Role.EXPERT_UP, Role.EXPERT_DOWN)
NORMS = frozenset({Role.INPUT_NORM, Role.POST_NORM, Role.FINAL_NORM})
LINEAR = frozenset({Role.Q, Role.K, Role.V, Role.QKV, Role.O, Role.GATE, Role.UP, Role.GATE_UP, Role.DOWN})
ROTATED = frozenset({Role.Q, Role.K})  # rows llama.cpp's llama graph wants permuted (adjacent-pair rotation)

# Buffers some checkpoints saved that no runtime reads (recomputed from the config): accepted and skipped.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class TensorSlot:
    """One tensor an architecture stores: HF name, role, shape (row-major, [out, in] for matrices)."""

    name: str
    role: Role
    shape: tuple[int, ...]
    layer: int | None = None
    is_bias: bool = False
    required: bool = True
    expert: int | None = None  # which expert of a sparse MoE layer (EXPERT_ROLES only)


def role_shape(role: Role, geo: "ModelGeometry") -> tuple[int, ...]:
    """The HF shape of a weight of `role` for this geometry."""
    h, inter = geo.hidden_size, geo.intermediate_size
    q, kv = geo.num_heads * geo.head_dim, geo.num_kv_heads * geo.head_dim
    shapes = {
        Role.EMBED: (geo.vocab_size, h), Role.LM_HEAD: (geo.vocab_size, h),
        Role.FINAL_NORM: (h,), Role.INPUT_NORM: (h,), Role.POST_NORM: (h,),
        Role.Q: (q, h), Role.K: (kv, h), Role.V: (kv, h), Role.QKV: (q + 2 * kv, h), Role.O: (h, q),
        Role.GATE: (inter, h), Role.UP: (inter, h), Role.GATE_UP: (2 * inter, h), Role.DOWN: (h, inter),
        Role.ROUTER: (geo.num_experts, h),
        Role.EXPERT_GATE: (inter, h), Role.EXPERT_UP: (inter, h), Role.EXPERT_DOWN: (h, inter),
    }
    return shapes[role]


class Architecture:
    """The LLaMA-shaped decoder most architectures are: override only what differs."""

    hf_class: ClassVar[str] = ""
    model_type: ClassVar[str] = ""
    # "llama": rope_scaling carries rope_type/type/factor/L_orig (+attention_factor) and top-level mirrors.
    # "phi3": rope_scaling must be exactly {type, short_factor, long_factor} for transformers 4.x.
    config_style: ClassVar[str] = "llama"
    supports_explicit_attention_factor: ClassVar[bool] = True
    global_names: ClassVar[dict[Role, str]] = {
        Role.EMBED: "model.embed_tokens", Role.FINAL_NORM: "model.norm", Role.LM_HEAD: "lm_head",
    }
    layer_prefix: ClassVar[str] = "model.layers.{i}"
    layer_names: ClassVar[dict[Role, str]] = {
        Role.INPUT_NORM: "input_layernorm", Role.POST_NORM: "post_attention_layernorm",
        Role.Q: "self_attn.q_proj", Role.K: "self_attn.k_proj", Role.V: "self_attn.v_proj",
        Role.QKV: "self_attn.qkv_proj", Role.O: "self_attn.o_proj",
        Role.GATE: "mlp.gate_proj", Role.UP: "mlp.up_proj", Role.GATE_UP: "mlp.gate_up_proj",
        Role.DOWN: "mlp.down_proj",
    }
    attention_roles: ClassVar[tuple[Role, ...]] = (Role.Q, Role.K, Role.V, Role.O)
    mlp_roles: ClassVar[tuple[Role, ...]] = (Role.GATE, Role.UP, Role.DOWN)
    biased_roles: ClassVar[frozenset[Role]] = LINEAR  # weights that may come with a bias
    required_biases: ClassVar[frozenset[Role]] = frozenset()  # ... and those whose bias must be there
    # llama.cpp: the GGUF arch with both factor sets (None: refused, with the reason) and with one set.
    gguf_pair_arch: ClassVar[str | None] = "llama"
    gguf_single_arch: ClassVar[str] = "llama"
    gguf_pair_refusal: ClassVar[str] = ""
    gguf_requires_endoftext: ClassVar[bool] = False  # llama.cpp's phi3 vocab check wants <|endoftext|>
    # keys a plain (pre-LongRoPE) config of this architecture carries beyond the common ones
    plain_config_keys: ClassVar[dict] = {}
    default_window: ClassVar[int | None] = None  # transformers' sliding_window when config.json has no such key
    # the decoder's norm ("rms": RMSNorm, weight only; "layer": LayerNorm with weight and bias) and its MLP routing
    # (None: dense; "sparsemixer": PhiMoE's top-2 sparsemixer, verify/reference_moe.py)
    norm: ClassVar[str] = "rms"
    moe_routing: ClassVar[str | None] = None
    gguf_moe_routing: ClassVar[str | None] = None  # what llama.cpp's graph computes instead, where it differs

    # ----- tensors --------------------------------------------------------------------------------------
    def global_slots(self, geo: "ModelGeometry") -> list[TensorSlot]:
        names = self.global_names
        return [
            TensorSlot(f"{names[Role.EMBED]}.weight", Role.EMBED, role_shape(Role.EMBED, geo)),
            TensorSlot(f"{names[Role.FINAL_NORM]}.weight", Role.FINAL_NORM, role_shape(Role.FINAL_NORM, geo)),
            TensorSlot(f"{names[Role.LM_HEAD]}.weight", Role.LM_HEAD, role_shape(Role.LM_HEAD, geo),
                       required=not geo.tie_word_embeddings),
        ]

    def layer_slots(self, i: int, geo: "ModelGeometry") -> list[TensorSlot]:
        """Every tensor of layer i in storage order: a weight, then its bias (required or optional), then a
        sparse MoE layer's experts."""
        prefix = self.layer_prefix.format(i=i)
        slots = []
        for role in (Role.INPUT_NORM, Role.POST_NORM, *self.attention_roles, *self.mlp_roles):
            name, shape = f"{prefix}.{self.layer_names[role]}", role_shape(role, geo)
            slots.append(TensorSlot(f"{name}.weight", role, shape, i))
            if role in self.biased_roles:
                slots.append(TensorSlot(f"{name}.bias", role, shape[:1], i, is_bias=True,
                                        required=role in self.required_biases))
        return slots + self.expert_slots(prefix, i, geo)

    def expert_slots(self, prefix: str, i: int, geo: "ModelGeometry") -> list[TensorSlot]:
        """Each expert's gate, up and down of a sparse MoE layer (none for a dense MLP)."""
        return [TensorSlot(f"{prefix}.{self.layer_names[role].format(e=e)}.weight", role, role_shape(role, geo), i,
                           expert=e) for e in range(geo.num_experts) for role in EXPERT_ROLES]

    def tensor_slots(self, geo: "ModelGeometry") -> list[TensorSlot]:
        """Every tensor the checkpoint may hold, global ones first."""
        slots = self.global_slots(geo)
        for i in range(geo.num_layers):
            slots += self.layer_slots(i, geo)
        return slots

    # ----- attention ------------------------------------------------------------------------------------
    def layer_windows(self, config: dict, num_layers: int) -> tuple[int | None, ...]:
        """The sliding window of each layer (None: full attention): `sliding_window`, when set, on every layer."""
        window = _window({"sliding_window": self.default_window} | config)
        return (window,) * num_layers


REGISTRY: dict[str, type[Architecture]] = {}


def register(cls: type[Architecture]) -> type[Architecture]:
    REGISTRY[cls.hf_class] = cls
    return cls


@register
class Llama(Architecture):
    hf_class, model_type = "LlamaForCausalLM", "llama"

    def layer_windows(self, config: dict, num_layers: int) -> tuple[int | None, ...]:
        return (None,) * num_layers  # LLaMA has no sliding window


@register
class Mistral(Architecture):
    hf_class, model_type = "MistralForCausalLM", "mistral"
    plain_config_keys = {"sliding_window": None}
    default_window = 4096


@register
class Qwen2(Architecture):
    hf_class, model_type = "Qwen2ForCausalLM", "qwen2"
    default_window = 4096
    required_biases = frozenset({Role.Q, Role.K, Role.V})
    # llama.cpp's qwen2 graph loads no rope factors; its llama graph loads the pair (rope.scaling.type longrope) and
    # optional q/k/v biases, so Qwen2 is written as arch llama (docs/gguf.md)
    gguf_pair_arch = "llama"
    plain_config_keys = {"sliding_window": None, "use_sliding_window": False}

    def layer_windows(self, config: dict, num_layers: int) -> tuple[int | None, ...]:
        """transformers' rule (4.5x and 5.x alike): no window unless use_sliding_window; then the saved
        `layer_types` say which layers slide, or else the layers from max_window_layers on do. transformers'
        defaults apply to absent keys (sliding_window 4096, max_window_layers 28)."""
        if not config.get("use_sliding_window", False):
            return (None,) * num_layers
        window = _window({"sliding_window": self.default_window} | config)
        types = config.get("layer_types")
        if types is not None:
            return _windows_from_layer_types(types, window, num_layers)
        first = config.get("max_window_layers", 28)
        if not isinstance(first, int) or isinstance(first, bool) or first < 0:
            raise ConfigError(f"'max_window_layers' must be an integer >= 0, got {first!r}")
        return tuple(window if window is not None and i >= first else None for i in range(num_layers))


@register
class Phi3(Architecture):
    hf_class, model_type = "Phi3ForCausalLM", "phi3"
    config_style = "phi3"
    supports_explicit_attention_factor = False
    attention_roles = (Role.QKV, Role.O)
    mlp_roles = (Role.GATE_UP, Role.DOWN)
    gguf_pair_arch = gguf_single_arch = "phi3"
    gguf_requires_endoftext = True
    plain_config_keys = {"sliding_window": None, "resid_pdrop": 0.0, "embd_pdrop": 0.0}


@register
class PhiMoE(Architecture):
    """Phi-3.5-MoE (docs/phimoe.md): LayerNorms with biases, biased q/k/v/o, a biased untied head, and a sparse MoE
    MLP (router `block_sparse_moe.gate`, experts `block_sparse_moe.experts.{e}.w1/w3/w2` = gate/up/down) routed
    top-2 by sparsemixer; short/long_mscale in rope_scaling replace the default attention factor."""

    hf_class, model_type = "PhimoeForCausalLM", "phimoe"
    config_style = "phimoe"
    norm = "layer"
    moe_routing = "sparsemixer"
    layer_names = Architecture.layer_names | {
        Role.ROUTER: "block_sparse_moe.gate",
        Role.EXPERT_GATE: "block_sparse_moe.experts.{e}.w1",
        Role.EXPERT_UP: "block_sparse_moe.experts.{e}.w3",
        Role.EXPERT_DOWN: "block_sparse_moe.experts.{e}.w2",
    }
    mlp_roles = (Role.ROUTER,)  # then the experts
    biased_roles = required_biases = frozenset({Role.INPUT_NORM, Role.POST_NORM, Role.Q, Role.K, Role.V, Role.O})
    gguf_pair_arch = gguf_single_arch = "phimoe"
    gguf_moe_routing = "softmax_topk"  # llama.cpp's phimoe graph: softmax over all experts, top-2, renormalised
    # Phi-3.5-MoE's published values for the keys its modeling code reads (4 experts keep the tiny model small)
    plain_config_keys = {"sliding_window": None, "attention_bias": True, "lm_head_bias": True,
                         "num_local_experts": 4, "num_experts_per_tok": 2, "router_jitter_noise": 0.01,
                         "input_jitter_noise": 0.0}

    def global_slots(self, geo: "ModelGeometry") -> list[TensorSlot]:
        """The LLaMA globals plus the final LayerNorm's bias and the head's bias (lm_head_bias: true)."""
        names = self.global_names
        return super().global_slots(geo) + [
            TensorSlot(f"{names[Role.FINAL_NORM]}.bias", Role.FINAL_NORM, role_shape(Role.FINAL_NORM, geo),
                       is_bias=True),
            TensorSlot(f"{names[Role.LM_HEAD]}.bias", Role.LM_HEAD, (geo.vocab_size,), is_bias=True),
        ]


ARCHITECTURES: dict[str, Architecture] = {name: cls() for name, cls in REGISTRY.items()}


def architecture_for(config: dict, source: str = "config.json") -> Architecture:
    """The registered architecture named by config['architectures'][0]; anything else is refused."""
    names = config.get("architectures") or []
    if not isinstance(names, list) or not names:
        raise UnsupportedArchitectureError("config has no 'architectures' list; cannot tell the model class", source)
    name = names[0]
    if name not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitectureError(f"architecture {name!r} is not supported (supported: {supported})", source)
    return ARCHITECTURES[name]


def _window(config: dict) -> int | None:
    window = config.get("sliding_window")
    if window is None:
        return None
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise ConfigError(f"'sliding_window' must be a positive integer or null, got {window!r}")
    return window


def _windows_from_layer_types(types, window: int | None, num_layers: int) -> tuple[int | None, ...]:
    if not isinstance(types, list) or len(types) != num_layers:
        raise ConfigError(f"'layer_types' must list one type per layer ({num_layers})")
    unknown = [t for t in types if t not in ("full_attention", "sliding_attention")]
    if unknown:
        raise ConfigError(f"'layer_types' holds {unknown[0]!r}; expected full_attention or sliding_attention")
    return tuple(window if t == "sliding_attention" else None for t in types)
