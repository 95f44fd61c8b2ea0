"""What each llama.cpp architecture a GGUF can be written as expects, and which one an architecture gets.

The architecture description (formats/architectures.py) names the llama.cpp arch for both factor sets and for
one; a `GgufLayout` says how llama.cpp's graph for that arch differs from HF's: rope pairing (Q/K row
permutation), partial rotary support, and how factor sets are stored. A new llama.cpp arch is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from ..architectures import Architecture
from ..errors import SpecError, UnsupportedArchitectureError

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
    # the graph normalises with RMSNorm (+ bias) only: a LayerNorm model's residual writes are centred (tensors.py)
    rms_norm_only: bool = False
    # sparse MoE graph: expert counts are written and experts stacked into 3-D tensors
    moe: bool = False

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.arch]


LLAMA_LAYOUT = GgufLayout(gguf.MODEL_ARCH.LLAMA, permute_qk=True, full_rotary_only=True,
                          single_set_as_freqs=True, pair_needs_scaling_type=True)
PHI3_LAYOUT = GgufLayout(gguf.MODEL_ARCH.PHI3, permute_qk=False, full_rotary_only=False,
                         single_set_as_freqs=False, pair_needs_scaling_type=False)


# phimoe is the phi3 graph with its MoE branch: LayerNorm biases loaded but normalised as RMSNorm, factors
# sized n_embd_head/2 (so no partial rotary), routing softmax top-k renormalised (docs/phimoe.md)
PHIMOE_LAYOUT = GgufLayout(gguf.MODEL_ARCH.PHIMOE, permute_qk=False, full_rotary_only=True,
                           single_set_as_freqs=False, pair_needs_scaling_type=False, rms_norm_only=True, moe=True)


LAYOUTS: dict[str, GgufLayout] = {layout.name: layout for layout in (LLAMA_LAYOUT, PHI3_LAYOUT, PHIMOE_LAYOUT)}


def gguf_layout(arch: Architecture, factor_sets: str, rotary_dim: int, head_dim: int) -> GgufLayout:
    """The layout to write `arch` with for `factor_sets` ('pair', 'long', 'short'), refusing what llama.cpp
    cannot run (the architecture description names the llama.cpp arch for each case)."""
    if factor_sets not in FACTOR_SET_CHOICES:
        raise SpecError(f"--factor-sets must be one of {', '.join(FACTOR_SET_CHOICES)}, got {factor_sets!r}")
    name = arch.gguf_pair_arch if factor_sets == "pair" else arch.gguf_single_arch
    if name is None:
        raise SpecError(f"{arch.hf_class}: {arch.gguf_pair_refusal}")
    if name not in LAYOUTS:
        raise UnsupportedArchitectureError(f"{arch.hf_class}: no GGUF layout for llama.cpp arch {name!r}")
    layout = LAYOUTS[name]
    if layout.full_rotary_only and rotary_dim != head_dim:
        raise SpecError(
            f"{arch.hf_class}: llama.cpp's {layout.name} architecture needs rotary dim == head_dim "
            f"({rotary_dim} != {head_dim})"
        )
    return layout


def check_windows(arch: Architecture, layout: GgufLayout, windows: tuple[int | None, ...], max_positions: int) -> None:
    """Refuse a checkpoint whose sliding window takes effect within its context: llama.cpp's llama graph has no
    sliding window and its phi3 graph disables it, so the GGUF would attend to tokens transformers masks out."""
    active = sorted({w for w in windows if w is not None and w < max_positions})
    if active:
        raise SpecError(
            f"{arch.hf_class}: a sliding window of {active[0]} tokens applies within max_position_embeddings "
            f"{max_positions}, and llama.cpp's {layout.name} graph applies none; the GGUF would differ beyond "
            f"{active[0]} tokens"
        )
