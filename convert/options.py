"""Click options shared by every command that takes raw LongRoPE factors (bake, hf-to-gguf)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from ..formats.spec_inputs import SpecRequest

_PATH = click.Path(path_type=Path, dir_okay=False)


def spec_options(func):
    """Adds the factor options and passes a SpecRequest as `spec_request`."""

    @click.option("--long-factors", type=_PATH, help="Long factor file (any supported layout).")
    @click.option("--short-factors", type=_PATH, help="Short factor file (default: all 1.0, as LongRoPE2).")
    @click.option("--original-max-position-embeddings", "l_orig", type=click.IntRange(min=1),
                  help="L_orig, the pre-extension context (default: from the source config).")
    @click.option("--max-position-embeddings", "max_pos", type=click.IntRange(min=1),
                  help="The extended context (default: from the source config).")
    @click.option("--attention-factor", type=float, help="Explicit mscale (default sqrt(1 + ln s / ln L_orig)).")
    @click.option("--strip-search-prefix", is_flag=True,
                  help="Accept LongRoPE search vectors with 1 (n_hat) or 2 (piecewise dims) leading values.")
    @click.option("--drop-start-tokens", is_flag=True,
                  help="Ship without a stripped prefix's n_hat start tokens (HF and GGUF cannot express them; "
                       "refused otherwise).")
    @functools.wraps(func)
    def wrapper(*args, long_factors, short_factors, l_orig, max_pos, attention_factor, strip_search_prefix,
                drop_start_tokens, **kwargs):
        kwargs["spec_request"] = SpecRequest(
            long_factors=long_factors,
            short_factors=short_factors,
            original_max_position_embeddings=l_orig,
            max_position_embeddings=max_pos,
            attention_factor=attention_factor,
            strip_search_prefix=strip_search_prefix,
            drop_start_tokens=drop_start_tokens,
        )
        return func(*args, **kwargs)

    return wrapper
