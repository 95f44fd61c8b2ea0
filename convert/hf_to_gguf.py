"""The hf-to-gguf pipeline: a (baked or plain + factors) HF checkpoint -> one GGUF llama.cpp runs with the right
LongRoPE factors. Everything is validated before the output is opened; tensors stream one chunk at a time.

Quantized types llama.cpp makes (q4_0, q4_k_m, q5_k_m, q6_k) take two phases: the streaming writer makes a lossless
intermediate GGUF beside the output, llama.cpp's quantizer turns it into the atomic temp output, and the
intermediate is deleted whatever happens (formats/gguf/quantize.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..formats.atomic_output import atomic_output_file, check_output_path
from ..formats.errors import LongRopeError
from ..formats.gguf.dtypes import (
    AUTO,
    OUTTYPE_CHOICES,
    OUTTYPES,
    OutType,
    auto_outtype,
    intermediate_outtype,
)
from ..formats.gguf.hparams import add_model_hparams
from ..formats.gguf.layouts import GgufLayout, check_windows, gguf_layout
from ..formats.gguf.spec_keys import add_rope_keys, add_spec_metadata
from ..formats.gguf.tensors import TensorPlan, factor_tensor_plans, plan_weight_tensors
from ..formats.gguf.vocab import GgufVocab, has_tokenizer, read_vocab
from ..formats.gguf.writer import write_gguf
from ..formats.hf.checkpoint import Checkpoint, open_checkpoint
from ..formats.hf.geometry import ModelGeometry
from ..formats.spec import LongRopeSpec
from ..formats.spec_inputs import SpecRequest, spec_for_checkpoint, without_start_tokens

log = logging.getLogger(__name__)
NO_VOCAB_MODEL = "none"  # llama.cpp's tokenizer model for a GGUF without vocabulary (it refuses a missing key)


@dataclass(frozen=True)
class GgufResult:
    output: Path
    spec: LongRopeSpec
    arch: str
    factor_sets: str
    outtype: str
    tensors: int
    warnings: list[str]


@dataclass(frozen=True)
class GgufJob:
    """Everything validated before the output is opened."""

    config: dict
    geo: ModelGeometry
    spec: LongRopeSpec
    layout: GgufLayout
    plans: list[TensorPlan]
    vocab: GgufVocab | None
    warnings: list[str]
    outtype: OutType  # what OUT holds (`auto` resolved)
    write_type: OutType  # what the streaming writer writes: outtype, or the quantizer's lossless intermediate


def convert_hf_to_gguf(
    src: Path, out: Path, request: SpecRequest | None = None, outtype: str = "f16", factor_sets: str = "pair",
    no_vocab: bool = False, force: bool = False, progress: bool | None = None,
) -> GgufResult:
    """Convert the checkpoint `src` into the GGUF file `out` (written to a temp file, renamed at the end)."""
    src, out = Path(src), Path(out)
    request = request or SpecRequest()
    job = plan_conversion(src, request, outtype, factor_sets, no_vocab)
    check_output_path(out, [src] + [p for p in (request.long_factors, request.short_factors) if p], force)

    def metadata(writer) -> None:
        add_model_hparams(writer, job.config, job.geo, job.layout, job.write_type.file_type, src.name)
        add_rope_keys(writer, job.spec, mark_longrope=factor_sets == "pair" and job.layout.pair_needs_scaling_type)
        add_spec_metadata(writer, job.spec, factor_sets, __version__)
        if job.vocab is not None:
            job.vocab.add_to(writer)
        else:
            writer.add_tokenizer_model(NO_VOCAB_MODEL)

    with atomic_output_file(out, force) as tmp:
        if not job.outtype.needs_quantizer:
            write_gguf(tmp, job.layout.name, metadata, job.plans, progress)
        else:
            # imported where needed: it imports tqdm, ~40 ms of every conversion's start-up
            from ..formats.gguf import quantize

            with quantize.intermediate_file(out) as intermediate:
                write_gguf(intermediate, job.layout.name, metadata, job.plans, progress)
                quantize.quantize_gguf(intermediate, tmp, job.outtype, len(job.plans), progress)
    _log_summary(out, job.layout, job.spec, factor_sets, job.plans)
    return GgufResult(out, job.spec, job.layout.name, factor_sets, job.outtype.name, len(job.plans), job.warnings)


def plan_conversion(src: Path, request: SpecRequest, outtype: str, factor_sets: str, no_vocab: bool) -> GgufJob:
    """Read and check config, spec, layout, every tensor header and the tokenizer; nothing is written."""
    if outtype not in OUTTYPE_CHOICES:
        raise LongRopeError(f"--outtype must be one of {', '.join(OUTTYPE_CHOICES)}, got {outtype!r}")
    if outtype in OUTTYPES and OUTTYPES[outtype].needs_quantizer:
        from ..formats.gguf.quantize import require_llama_cpp

        require_llama_cpp(outtype)  # before any reading: a missing extra is a one-line error
    checkpoint = open_checkpoint(src)
    geo = checkpoint.geometry
    spec, warnings = spec_for_checkpoint(checkpoint, request)
    spec = without_start_tokens(spec, request.drop_start_tokens)  # n_hat: refused unless dropped
    layout = gguf_layout(checkpoint.arch, factor_sets, spec.rotary_dim, geo.head_dim)
    check_windows(checkpoint.arch, layout, checkpoint.windows, spec.max_position_embeddings)
    final, write_type = resolve_outtype(outtype, checkpoint)
    plans = plan_weight_tensors(checkpoint, layout, write_type)
    plans += factor_tensor_plans(layout, factor_sets, spec.long_factor, spec.short_factor)
    vocab = _vocab(src, geo.vocab_size, checkpoint.arch.gguf_requires_endoftext, no_vocab)
    return GgufJob(checkpoint.config, geo, spec, layout, plans, vocab, warnings, final, write_type)


def resolve_outtype(outtype: str, checkpoint: Checkpoint) -> tuple[OutType, OutType]:
    """(the output's type, the type the streaming writer writes): `auto` follows the source's 2-D tensors as
    llama.cpp's converter does; a quantizer type is written first in the source's own float type."""
    slots = checkpoint.slots()
    matrix_dtypes = [info.dtype for name, info in checkpoint.tensors.items()
                     if name in slots and len(info.shape) >= 2]
    final = auto_outtype(matrix_dtypes) if outtype == AUTO else OUTTYPES[outtype]
    if outtype == AUTO:
        log.info("--outtype auto: %s (from the source's 2-D tensor dtypes)", final.name)
    return final, intermediate_outtype(matrix_dtypes) if final.needs_quantizer else final


def _vocab(src: Path, vocab_size: int, require_endoftext: bool, no_vocab: bool) -> GgufVocab | None:
    if no_vocab:
        if has_tokenizer(src):
            log.warning("--no-vocab: the tokenizer in %s is left out of the GGUF", src)
        else:
            log.warning("--no-vocab: no tokenizer written; llama.cpp loads it but cannot tokenize text")
        return None
    return read_vocab(src, vocab_size, require_endoftext)


def _log_summary(out: Path, layout: GgufLayout, spec: LongRopeSpec, factor_sets: str, plans: list[TensorPlan]) -> None:
    log.info("wrote %s: arch %s, %d tensors, factor sets %s", out, layout.name, len(plans), factor_sets)
    if factor_sets == "pair":
        log.info("llama.cpp uses the long factors iff n_ctx (rounded up to 256) > %d; attention factor %.6g",
                 spec.original_max_position_embeddings, spec.attention_factor)
    else:
        log.info("the %s factors apply at every context size; attention factor %.6g", factor_sets,
                 spec.attention_factor)
