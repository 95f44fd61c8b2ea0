"""HF class -> the llama.cpp architecture a GGUF is written as, and what that architecture expects.

A new architecture is a `GgufTarget` line here. A `GgufLayout` says how llama.cpp's graph for one GGUF arch
differs from HF's: rope pairing (Q/K row permutation), partial rotary support, and how factor sets are stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from .errors import SpecError, UnsupportedArchitectureError

FACTOR_SET_CHOICES = ("pair", "long", "short")


@dataclass(frozen=True)
class GgufLayout:
    """What one llama.cpp architecture expects of tensors and rope keys."""

    arch: gguf.MODEL_ARCH
    # llama.cpp's NORM rope rotates adjacent pairs, HF rotates halves: Q/K rows are permuted per head.
    permute_qk: bool
    # the llama graph asserts n_rot == head_dim, so partial rotary models cannot use it.
    full_rotary_only: bool
    # one factor set -> `rope_freqs.weight` (llama); phi3 loads no rope_freqs, so both factor tensors get the set.
    single_set_as_freqs: bool
    # llama loads the long/short pair only when rope.scaling.type = longrope; phi3 always loads it.
    pair_needs_scaling_type: bool

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]


LLAMA_LAYOUT = GgufLayout(gguf.MODEL_ARCH.LLAMA, permute_qk=True, full_rotary_only=True,
                          single_set_as_freqs=True, pair_needs_scaling_type=True)
PHI3_LAYOUT = GgufLayout(gguf.MODEL_ARCH.PHI3, permute_qk=False, full_rotary_only=False,
                         single_set_as_freqs=False, pair_needs_scaling_type=False)


@dataclass(frozen=True)
class GgufTarget:
    """The GGUF layout of one HF class with both factor sets, and with a single set."""

    hf_class: str
    pair: GgufLayout | None
    single: GgufLayout
    pair_refusal: str = ""
    requires_endoftext: bool = False  # llama.cpp's phi3 vocab check wants <|endoftext|>


GGUF_TARGETS: dict[str, GgufTarget] = {
    t.hf_class: t
    for t in (
        GgufTarget("LlamaForCausalLM", LLAMA_LAYOUT, LLAMA_LAYOUT),
        GgufTarget("MistralForCausalLM", LLAMA_LAYOUT, LLAMA_LAYOUT),
        # llama.cpp's qwen2 graph loads no rope factors at all; with one set the model is written as `llama`
        # (same decoder, q/k/v biases are optional there) with rope_freqs.weight.
        GgufTarget(
            "Qwen2ForCausalLM", None, LLAMA_LAYOUT,
            pair_refusal="llama.cpp's qwen2 architecture cannot switch LongRoPE factor sets; pass "
                         "--factor-sets long or --factor-sets short to write one set applied at every length",
        ),
        GgufTarget("Phi3ForCausalLM", PHI3_LAYOUT, PHI3_LAYOUT, requires_endoftext=True),
    )
}


def gguf_target(hf_class: str) -> GgufTarget:
    """The registry entry for an HF class, or a one-line error naming the supported ones."""
    if hf_class not in GGUF_TARGETS:
        supported = ", ".join(sorted(GGUF_TARGETS))
        raise UnsupportedArchitectureError(f"{hf_class} has no GGUF mapping (supported: {supported})")
    return GGUF_TARGETS[hf_class]


def gguf_layout(target: GgufTarget, factor_sets: str, rotary_dim: int, head_dim: int) -> GgufLayout:
    """The layout to write for `factor_sets` ('pair', 'long', 'short'), refusing what llama.cpp cannot run."""
    if factor_sets not in FACTOR_SET_CHOICES:
        raise SpecError(f"--factor-sets must be one of {', '.join(FACTOR_SET_CHOICES)}, got {factor_sets!r}")
    layout = target.pair if factor_sets == "pair" else target.single
    if layout is None:
        raise SpecError(f"{target.hf_class}: {target.pair_refusal}")
    if layout.full_rotary_only and rotary_dim != head_dim:
        raise SpecError(
            f"{target.hf_class}: llama.cpp's {layout.name} architecture needs rotary dim == head_dim "
            f"({rotary_dim} != {head_dim})"
        )
    return layout
