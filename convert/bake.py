"""The bake pipeline: source checkpoint + factors -> a complete, hub-ready LongRoPE checkpoint folder."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..formats.atomic_output import atomic_output_dir, check_output_path
from ..formats.hf.checkpoint import open_checkpoint
from ..formats.hf.config import longrope_config
from ..formats.hf.model_card import model_card
from ..formats.hf.tensor_index import COMPANION_FILES, INDEX_NAME, weight_files
from ..formats.spec import LongRopeSpec
from ..formats.spec_inputs import SpecRequest, spec_for_checkpoint, without_start_tokens
from .file_transfer import copy_small_files, link_or_copy_all

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BakeResult:
    output: Path
    spec: LongRopeSpec
    weights_mode: str
    warnings: list[str]


def bake_checkpoint(
    src: Path, out: Path, request: SpecRequest, force: bool = False, copy_weights: bool = False
) -> BakeResult:
    """Validate everything first, then write into a temp folder renamed onto `out` at the end."""
    src, out = Path(src), Path(out)
    checkpoint = open_checkpoint(src)  # config, architecture and every tensor header checked before writing
    arch = checkpoint.arch
    weights = weight_files(src)
    spec, warnings = spec_for_checkpoint(checkpoint, request)
    shipped = without_start_tokens(spec, request.drop_start_tokens)  # n_hat: refused unless dropped
    new_config = longrope_config(checkpoint.config, shipped, checkpoint.source)
    inputs = [src] + [p for p in (request.long_factors, request.short_factors) if p is not None]
    check_output_path(out, inputs, force)
    with atomic_output_dir(out, force) as tmp:
        (tmp / "config.json").write_text(json.dumps(new_config, indent=2) + "\n")
        if (src / INDEX_NAME).is_file():
            weights = weights + [src / INDEX_NAME]
        mode = link_or_copy_all(weights, tmp, allow_links=not copy_weights)
        copied = copy_small_files(src, COMPANION_FILES, tmp)
        (tmp / "README.md").write_text(model_card(shipped, arch.hf_class, src.name, __version__))
    log.info("baked %s -> %s (%s, weights %s, %d companion files)", src, out, arch.hf_class, mode, len(copied))
    log.info(
        "L_orig %d, max %d, attention factor %.6g; long factors iff > %d positions",
        shipped.original_max_position_embeddings, shipped.max_position_embeddings,
        shipped.attention_factor, shipped.original_max_position_embeddings,
    )
    return BakeResult(out, shipped, mode, warnings)
