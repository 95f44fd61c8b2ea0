"""`longrope-convert hf-to-gguf`: one GGUF that llama.cpp runs with the right LongRoPE factors."""

from __future__ import annotations

import atexit
import gc
import os
import sys
from pathlib import Path

import click

from .options import spec_options

# formats.gguf.dtypes.OUTTYPE_CHOICES and formats.gguf.layouts.FACTOR_SET_CHOICES; literal so the CLI starts fast
# (tests/convert/test_hf_to_gguf_kquants.py checks they agree)
OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k", "auto")
FACTOR_SETS = ("pair", "long", "short")


@click.command(name="hf-to-gguf")
@click.argument("src", type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--output", "--outfile", "out", required=True, type=click.Path(path_type=Path),
              help="Output .gguf file (--outfile as in llama.cpp's converter).")
@click.option("--outtype", type=click.Choice(OUTTYPES), default="f16", show_default=True,
              help="Type of 2-D weights. q4_0/q4_k_m/q5_k_m/q6_k: llama.cpp's quantizer (needs "
                   "longrope-convert[llama]); auto: bf16 or f16 as the source, as llama.cpp's converter. "
                   "1-D tensors and factor tensors stay F32.")
@click.option("--factor-sets", type=click.Choice(FACTOR_SETS), default="pair", show_default=True,
              help="'pair': both sets, llama.cpp picks by context size. 'long'/'short': one set at every length.")
@spec_options
@click.option("--no-vocab", is_flag=True, help="Convert without a tokenizer (warns); runs on token ids only.")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def hf_to_gguf(src: Path, out: Path, outtype: str, factor_sets: str, spec_request, no_vocab: bool,
               force: bool) -> None:
    """Convert the checkpoint SRC (baked, or plain plus --long-factors) into the GGUF file given by -o/--outfile.

    llama.cpp then uses the long factors iff its context size (-c, rounded up to 256) exceeds the original
    context L_orig; -c 0 means the full trained context, so long."""
    if "numpy" not in sys.modules:
        # numpy's OpenBLAS would start a thread per core at import (~50 ms) that then spins; nothing here uses BLAS
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .hf_to_gguf import convert_hf_to_gguf

    convert_hf_to_gguf(src, out, spec_request, outtype=outtype, factor_sets=factor_sets, no_vocab=no_vocab,
                       force=force)
    atexit.register(gc.freeze)  # the interpreter's exit then skips collecting every object it made: 40-75 ms
