"""The LongRoPE spec: the one home of the rope math (inverse frequencies, cos/sin, attention factor).

Every writer (HF config, GGUF, ONNX) and every reader (reference forward, verifier) uses this object;
nothing else computes rope frequencies. torch is imported lazily so the CLI starts fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .errors import SpecError
from .factor_set import FactorSet, choose_by_sequence_length

if TYPE_CHECKING:  # pragma: no cover
    import torch


def default_attention_factor(scale: float, original_max_position_embeddings: int) -> float:
    """sqrt(1 + ln(s)/ln(L_orig)), or 1.0 when the context is not extended (s <= 1)."""
    if scale <= 1.0:
        return 1.0
    return math.sqrt(1.0 + math.log(scale) / math.log(original_max_position_embeddings))


@dataclass(frozen=True)
class LongRopeSpec:
    """Everything that determines LongRoPE cos/sin for one model.

    `long_factor`/`short_factor` have rotary_dim/2 entries and divide the plain RoPE frequencies.
    `start_tokens` is LongRoPE v1's n_hat: positions below it keep plain RoPE (no format can express it).
    """

    long_factor: tuple[float, ...]
    short_factor: tuple[float, ...]
    original_max_position_embeddings: int
    max_position_embeddings: int
    rope_theta: float
    rotary_dim: int
    explicit_attention_factor: float | None = None
    start_tokens: int = 0
    # PhiMoE's `short_mscale`/`long_mscale`: a per-set attention factor replacing the one above (docs/phimoe.md)
    short_attention_factor: float | None = None
    long_attention_factor: float | None = None
    rotary_dim_source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "long_factor", tuple(float(x) for x in self.long_factor))
        object.__setattr__(self, "short_factor", tuple(float(x) for x in self.short_factor))
        self._validate()

    def _validate(self) -> None:
        half = self.rotary_dim // 2
        if self.rotary_dim <= 0 or self.rotary_dim % 2:
            raise SpecError(f"rotary dim must be a positive even number, got {self.rotary_dim}")
        for name, values in (("long_factor", self.long_factor), ("short_factor", self.short_factor)):
            if len(values) != half:
                raise SpecError(f"{name} has {len(values)} entries, expected {half} (rotary dim {self.rotary_dim}/2)")
            bad = [v for v in values if not (math.isfinite(v) and v > 0)]
            if bad:
                raise SpecError(f"{name} must be finite and > 0, found {bad[0]!r}")
        if self.original_max_position_embeddings <= 0:
            raise SpecError(f"original_max_position_embeddings must be > 0, got {self.original_max_position_embeddings}")
        if self.max_position_embeddings < self.original_max_position_embeddings:
            raise SpecError(
                f"max_position_embeddings ({self.max_position_embeddings}) is below "
                f"original_max_position_embeddings ({self.original_max_position_embeddings})"
            )
        if not (math.isfinite(self.rope_theta) and self.rope_theta > 1):
            raise SpecError(f"rope_theta must be a finite number > 1, got {self.rope_theta}")
        for af in (self.explicit_attention_factor, self.short_attention_factor, self.long_attention_factor):
            if af is not None and not (math.isfinite(af) and af > 0):
                raise SpecError(f"attention factor must be finite and > 0, got {af}")
        if self.start_tokens < 0:
            raise SpecError(f"start tokens (n_hat) must be >= 0, got {self.start_tokens}")

    # ----- derived numbers -------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """s = max_position_embeddings / L_orig, the nominal context extension."""
        return self.max_position_embeddings / self.original_max_position_embeddings

    @property
    def attention_factor_default(self) -> float:
        """sqrt(1 + ln(s)/ln(L_orig)): what every runtime uses when no explicit factor is stored."""
        return default_attention_factor(self.scale, self.original_max_position_embeddings)

    @property
    def attention_factor(self) -> float:
        """The mscale multiplying cos and sin (explicit if given, else the LongRoPE default)."""
        if self.explicit_attention_factor is not None:
            return self.explicit_attention_factor
        return self.attention_factor_default

    def attention_factor_for(self, which: FactorSet) -> float:
        """The mscale multiplying cos/sin when `which` runs: the set's own (PhiMoE short/long_mscale) if given."""
        own = self.long_attention_factor if which is FactorSet.LONG else self.short_attention_factor
        return own if own is not None else self.attention_factor

    @property
    def has_per_set_attention_factors(self) -> bool:
        """True when the two sets carry different attention factors (one GGUF key cannot express that)."""
        return self.attention_factor_for(FactorSet.SHORT) != self.attention_factor_for(FactorSet.LONG)

    def factors(self, which: FactorSet) -> tuple[float, ...]:
        return self.long_factor if which is FactorSet.LONG else self.short_factor

    def factor_set_for_length(self, total_length: int) -> FactorSet:
        """The set transformers (and our ONNX graphs) use for a forward covering `total_length` positions."""
        return choose_by_sequence_length(total_length, self.original_max_position_embeddings)

    def with_factors_swapped(self) -> "LongRopeSpec":
        """A deliberately wrong spec, used to prove that checks can fail."""
        return replace(self, long_factor=self.short_factor, short_factor=self.long_factor)

    def rope_wavelengths(self, which: FactorSet | None = None) -> list[float]:
        """Wavelength in tokens of each rotary pair (2*pi/inv_freq); plain RoPE when `which` is None."""
        freqs = self.inv_freq_list(which)
        return [2 * math.pi / f for f in freqs]

    # ----- frequencies and cos/sin -----------------------------------------------------------------
    def inv_freq_list(self, which: FactorSet | None) -> list[float]:
        """Float64 inverse frequencies as plain floats (no torch): 1 / (factor_i * theta^(2i/d_rot))."""
        factors = self.factors(which) if which is not None else (1.0,) * (self.rotary_dim // 2)
        d = self.rotary_dim
        return [1.0 / (f * self.rope_theta ** (2 * i / d)) for i, f in enumerate(factors)]

    def inv_freq(self, which: FactorSet | None, dtype: "torch.dtype | None" = None, device=None) -> "torch.Tensor":
        """Inverse frequencies as a tensor.

        float32 follows transformers' order of operations exactly (arange -> float32 -> pow, divide),
        so a float32 reference agrees with it to ~1e-6; float64 is the truth.
        """
        import torch

        dtype = dtype or torch.float64
        half = self.rotary_dim // 2
        factors = self.factors(which) if which is not None else (1.0,) * half
        exponent = torch.arange(0, self.rotary_dim, 2, dtype=torch.int64, device=device).to(dtype) / self.rotary_dim
        ext = torch.tensor(factors, dtype=dtype, device=device)
        return 1.0 / (ext * self.rope_theta**exponent)

    def cos_sin(
        self,
        positions: "torch.Tensor",
        which: FactorSet | None = None,
        dtype: "torch.dtype | None" = None,
    ) -> tuple["torch.Tensor", "torch.Tensor"]:
        """cos and sin of shape positions.shape + (rotary_dim,), in the HF half-rotation layout.

        `which=None` applies the transformers rule to max(positions)+1. The attention factor multiplies
        both; positions below `start_tokens` use plain RoPE without it (LongRoPE v1 n_hat).
        """
        import torch

        dtype = dtype or torch.float64
        if which is None:
            which = self.factor_set_for_length(int(positions.max().item()) + 1)
        pos = positions.to(dtype)
        cos, sin = _angles_to_cos_sin(pos[..., None] * self.inv_freq(which, dtype, positions.device)[None, :])
        mscale = self.attention_factor_for(which)
        cos, sin = cos * mscale, sin * mscale
        if self.start_tokens > 0:
            plain_cos, plain_sin = _angles_to_cos_sin(pos[..., None] * self.inv_freq(None, dtype, positions.device))
            keep_plain = (positions < self.start_tokens)[..., None]
            cos = torch.where(keep_plain, plain_cos, cos)
            sin = torch.where(keep_plain, plain_sin, sin)
        return cos, sin


def _angles_to_cos_sin(angles: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
    import torch

    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos(), emb.sin()


def rotary_dim_for(head_dim: int, partial_rotary_factor: float = 1.0) -> int:
    """d_rot = int(head_dim * partial_rotary_factor), as transformers derives it."""
    return int(head_dim * partial_rotary_factor)


def plain_factors(rotary_dim: int) -> tuple[float, ...]:
    """All-ones factors: plain RoPE (LongRoPE2's default short set)."""
    return (1.0,) * (rotary_dim // 2)
