"""Assemble a LongRopeSpec from what a user hands over: a source config, factor files and numbers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import FactorFileError, SpecError
from .factor_files import (
    FactorFileContents,
    read_factor_file,
    validate_factors,
    warn_on_unusual,
)
from .factor_set import FactorSet
from .hf.rope_keys import (
    max_positions,
    original_max_positions,
    rope_theta,
)
from .spec import LongRopeSpec, plain_factors

if TYPE_CHECKING:  # pragma: no cover
    from .hf.checkpoint import Checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpecRequest:
    """The options of `bake` (and of converters taking raw factors); None means 'from the source config'."""

    long_factors: Path | None = None
    short_factors: Path | None = None
    original_max_position_embeddings: int | None = None
    max_position_embeddings: int | None = None
    attention_factor: float | None = None
    strip_search_prefix: bool = False
    drop_start_tokens: bool = False  # ship without n_hat (HF configs and GGUF cannot express it)


class StartTokensError(SpecError):
    """n_hat start tokens asked of an artifact that cannot express them, or out of range."""


def spec_for_checkpoint(checkpoint: Checkpoint, request: SpecRequest) -> tuple[LongRopeSpec, list[str]]:
    """The spec to bake: factors from files (or the config when it already is longrope), numbers from options,
    else the long factor file when it is a config excerpt carrying them, else the config. Returns the spec and
    the warnings raised about unusual values."""
    config, source, geo, existing = checkpoint.config, checkpoint.source, checkpoint.geometry, checkpoint.spec
    long_contents = read_factor_file(request.long_factors) if request.long_factors is not None else None
    request = with_excerpt_lengths(request, long_contents)
    l_orig = _default_l_orig(config, existing, request, source)
    max_pos = request.max_position_embeddings or max_positions(config, source) or 0
    if max_pos <= l_orig and request.max_position_embeddings is None:
        raise SpecError(
            f"max_position_embeddings ({max_pos}) does not extend L_orig ({l_orig}): pass --max-position-embeddings"
        )
    long, short, start_tokens = _factor_vectors(request, long_contents, existing, geo.rotary_dim,
                                                geo.rotary_dim_derivation)
    attention = request.attention_factor
    if attention is None and existing is not None and request.long_factors is None:
        attention = existing.explicit_attention_factor
    spec = LongRopeSpec(
        long_factor=long,
        short_factor=short,
        original_max_position_embeddings=int(l_orig),
        max_position_embeddings=int(max_pos),
        rope_theta=rope_theta(config, source),
        rotary_dim=geo.rotary_dim,
        explicit_attention_factor=attention,
        start_tokens=start_tokens,
        rotary_dim_source=geo.rotary_dim_derivation,
    )
    if existing is not None and request.attention_factor is None:  # PhiMoE's short/long_mscale carry over
        spec = replace(spec, short_attention_factor=existing.short_attention_factor,
                       long_attention_factor=existing.long_attention_factor)
    warnings = []
    for which, path in ((FactorSet.LONG, request.long_factors), (FactorSet.SHORT, request.short_factors)):
        warnings += warn_on_unusual(spec.factors(which), str(path or source), f"{which.value} factors", spec.scale)
    return spec, warnings


def with_excerpt_lengths(request: SpecRequest, contents: FactorFileContents | None) -> SpecRequest:
    """The request with the context lengths a config excerpt carries (Phi-3's has L_orig 4096 and max 131072)
    filled in where no option gave them: the factors were searched for exactly those lengths."""
    if contents is None:
        return request
    l_orig = request.original_max_position_embeddings or contents.original_max_position_embeddings
    max_pos = request.max_position_embeddings or contents.max_position_embeddings
    for name, value, given in (("original_max_position_embeddings", l_orig, request.original_max_position_embeddings),
                               ("max_position_embeddings", max_pos, request.max_position_embeddings)):
        if value is not None and given is None:
            log.info("%s = %d from %s", name, value, contents.path)
    return replace(request, original_max_position_embeddings=l_orig, max_position_embeddings=max_pos)


def _default_l_orig(config: dict, existing: LongRopeSpec | None, request: SpecRequest, source: str) -> int:
    """Option first, then the config's L_orig; a plain-RoPE config's max_position_embeddings is its L_orig."""
    if request.original_max_position_embeddings:
        return request.original_max_position_embeddings
    if existing is not None:
        return existing.original_max_position_embeddings
    l_orig = original_max_positions(config, source)
    if l_orig:
        return l_orig
    plain_max = max_positions(config, source)
    if plain_max and request.max_position_embeddings:
        log.info("L_orig = %d from the plain-RoPE source's max_position_embeddings", plain_max)
        return plain_max
    if plain_max:  # the usual first run on a plain checkpoint: what is missing is the extended context
        raise SpecError(f"{source} is a plain-RoPE checkpoint trained at {plain_max} tokens (taken as L_orig): pass "
                        "--max-position-embeddings M, the extended context the factors were searched for")
    raise SpecError(f"{source} has no original_max_position_embeddings: pass --original-max-position-embeddings")


def _factor_vectors(request: SpecRequest, long_contents: FactorFileContents | None, existing: LongRopeSpec | None,
                    rotary_dim: int, derivation: str):
    half = rotary_dim // 2
    if long_contents is None:
        if existing is None:
            raise FactorFileError("no --long-factors given and the source config is not longrope")
        short = existing.short_factor
        if request.short_factors is not None:
            short = _load(request.short_factors, FactorSet.SHORT, half, derivation, request).values
        return existing.long_factor, short, existing.start_tokens
    long = _check(long_contents.vector_for(FactorSet.LONG), request.long_factors, FactorSet.LONG, half, derivation, request)
    if request.short_factors is not None:
        short = _load(request.short_factors, FactorSet.SHORT, half, derivation, request).values
    elif long_contents.unnamed is None and long_contents.short is not None:
        short = _check(long_contents.short, request.long_factors, FactorSet.SHORT, half, derivation, request).values
        log.info("short factors taken from %s as well", request.long_factors)
    else:
        short = plain_factors(rotary_dim)
    return long.values, short, long.start_tokens


def _load(path: Path, which: FactorSet, half: int, derivation: str, request: SpecRequest):
    return _check(read_factor_file(path).vector_for(which), path, which, half, derivation, request)


def _check(values, path: Path, which: FactorSet, half: int, derivation: str, request: SpecRequest):
    if values is None:
        raise FactorFileError(f"holds no {which.value}_factor", path)
    return validate_factors(values, str(path), half, derivation, request.strip_search_prefix)


def without_start_tokens(spec: LongRopeSpec, drop: bool = False) -> LongRopeSpec:
    """The spec an HF config or a GGUF can carry: neither can express n_hat, so a spec with start tokens is refused
    unless `drop` (--drop-start-tokens) says to ship plain LongRoPE instead."""
    if not spec.start_tokens:
        return spec
    if not drop:
        raise StartTokensError(
            f"the factors carry n_hat = {spec.start_tokens} start tokens, which HF configs and GGUF cannot express: "
            f"pass --drop-start-tokens to ship without them (export-onnx --start-tokens {spec.start_tokens} keeps them)"
        )
    log.warning("n_hat = %d start tokens dropped (--drop-start-tokens): every position uses the LongRoPE rotation",
                spec.start_tokens)
    return replace(spec, start_tokens=0)


def with_start_tokens(spec: LongRopeSpec, start_tokens: int | None) -> LongRopeSpec:
    """`spec` with LongRoPE v1's n_hat set (None keeps the spec's own). n_hat must lie within L_orig: the plain
    positions are ones the model was trained on, so a larger n_hat is a mistake, not a setting."""
    if start_tokens is None:
        return spec
    if not 0 <= start_tokens <= spec.original_max_position_embeddings:
        raise StartTokensError(
            f"n_hat start tokens must be in 0..L_orig ({spec.original_max_position_embeddings}), got {start_tokens}"
        )
    return replace(spec, start_tokens=start_tokens)
