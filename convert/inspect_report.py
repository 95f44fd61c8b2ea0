"""`inspect`: render a LongRoPE spec (formats/artifact_spec.py reads it from any artifact) as a table or a plot."""

from __future__ import annotations

from pathlib import Path

from ..formats.errors import display_path
from ..formats.factor_compose import ComposedFactors
from ..formats.factor_files import read_factor_file
from ..formats.factor_set import LLAMA_CPP_CTX_GRANULARITY, FactorSet
from ..formats.figure_file import pyplot, save_png
from ..formats.longrope2 import fit_longrope2
from ..formats.spec import LongRopeSpec


def factor_file_report(path: Path) -> str:
    contents = read_factor_file(path)
    lines = [f"factor file {path}"]
    for label, values in (("values", contents.unnamed), ("long_factor", contents.long), ("short_factor", contents.short)):
        if values is not None:
            lines.append(f"{label}: {len(values)} entries (rotary dim {2 * len(values)}), "
                         f"min {min(values):.6g}, max {max(values):.6g}")
            lines.append("  " + ", ".join(f"{v:.6g}" for v in values))
            if label != "short_factor":  # LongRoPE2's closed form is a property of the long set
                lines.append("  " + longrope2_line(values))
    return "\n".join(lines)


def longrope2_line(values: tuple[float, ...]) -> str:
    """Whether a long set has LongRoPE2's shape (closed form below a critical dimension, searched above)."""
    fit = fit_longrope2(values)
    if fit is None:
        return "LongRoPE2 shape: no (no closed-form a^(i/d_c) prefix followed by searched dims)"
    return fit.describe()


def spec_report(spec: LongRopeSpec, source: str) -> str:
    """Header facts plus one row per rotary pair: factors and effective wavelengths (tokens)."""
    l_orig = spec.original_max_position_embeddings
    af_kind = "explicit" if spec.explicit_attention_factor is not None else "default sqrt(1 + ln s / ln L_orig)"
    head = [
        f"LongRoPE spec from {source}",
        f"  L_orig {l_orig}, max_position_embeddings {spec.max_position_embeddings}, scale s {spec.scale:.6g}",
        f"  rope_theta {spec.rope_theta:g}, rotary dim {spec.rotary_dim} ({spec.rotary_dim // 2} factors per set)",
        f"  attention factor {spec.attention_factor:.10g} ({af_kind})",
        f"  switch: transformers/ONNX use long iff positions > {l_orig}; llama.cpp iff n_ctx "
        f"(rounded up to {LLAMA_CPP_CTX_GRANULARITY}) > {l_orig}",
    ]
    if spec.start_tokens:
        head.append(f"  n_hat start tokens {spec.start_tokens}: positions below it use plain RoPE without the "
                    "attention factor (only an export-onnx --start-tokens graph expresses it)")
    head.append("  long set: " + longrope2_line(spec.long_factor))
    rows = [f"{'i':>4} {'short':>10} {'long':>10} {'wavelen plain':>14} {'wavelen short':>14} {'wavelen long':>14}"]
    plain = spec.rope_wavelengths(None)
    short = spec.rope_wavelengths(FactorSet.SHORT)
    long = spec.rope_wavelengths(FactorSet.LONG)
    for i in range(spec.rotary_dim // 2):
        rows.append(f"{i:>4} {spec.short_factor[i]:>10.5g} {spec.long_factor[i]:>10.5g} "
                    f"{plain[i]:>14.6g} {short[i]:>14.6g} {long[i]:>14.6g}")
    return "\n".join(head + [""] + rows)


def ntk_factors(spec: LongRopeSpec) -> list[float]:
    """NTK-aware scaling expressed as per-dim factors: s^(2i/(d-2))."""
    d = spec.rotary_dim
    return [spec.scale ** (2 * i / max(d - 2, 1)) for i in range(d // 2)]


def plot_spec(spec: LongRopeSpec, png: Path, force: bool = False) -> None:
    """Long and short factors against linear interpolation (s everywhere) and NTK, log scale.

    The caller checks `png` first (check_output_path); the PNG appears whole or not at all."""
    plt = pyplot()
    dims = list(range(spec.rotary_dim // 2))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(dims, spec.long_factor, "o-", label="long (searched)")
    ax.plot(dims, spec.short_factor, "s-", label="short (searched)")
    ax.plot(dims, [spec.scale] * len(dims), "--", label=f"linear interpolation (s={spec.scale:g})")
    ax.plot(dims, ntk_factors(spec), ":", label="NTK-aware")
    ax.set_yscale("log" if max(spec.long_factor) / max(min(spec.long_factor), 1e-9) > 20 else "linear")
    ax.set_xlabel("rotary pair i (higher = lower frequency)")
    ax.set_ylabel("factor (frequency divisor)")
    ax.set_title(f"LongRoPE factors: L_orig {spec.original_max_position_embeddings} -> {spec.max_position_embeddings}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, png, force, dpi=110)


def compose_table(composed: ComposedFactors) -> str:
    """One row per rotary pair: each stage's factor and the product; a header naming the stage files."""
    head = [f"stage {i}: {display_path(p)}" for i, p in enumerate(composed.paths, start=1)]
    cols = [f"stage {i}" for i in range(1, len(composed.stages) + 1)] + ["product"]
    rows = [f"{'i':>4} " + " ".join(f"{c:>12}" for c in cols)]
    for i, values in enumerate(zip(*composed.stages, composed.product)):
        rows.append(f"{i:>4} " + " ".join(f"{v:>12.6g}" for v in values))
    return "\n".join(head + rows)
