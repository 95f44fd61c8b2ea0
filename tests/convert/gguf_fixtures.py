"""Shared pieces of the GGUF tests: tiny baked checkpoints with tokenizers, cached conversions and references."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from longrope_convert.convert.demo.models import DEMO_MODELS

L_ORIG = 256
SHORT_LEN, SHORT_CTX = 200, 256  # n_ctx 256 = L_orig: llama.cpp uses the short set
LONG_LEN, LONG_CTX = 600, 1024  # n_ctx 1024 > L_orig: long set
# which tokenizer each demo model carries (both kinds are covered)
TOKENIZER_KIND = {hf_class: tokenizer for hf_class, (_, tokenizer) in DEMO_MODELS.items()}


@pytest.fixture(scope="session")
def gguf_models(demo_models) -> dict[str, Path]:
    """hf_class -> the demo's baked tiny checkpoint (L_orig 256 -> 1024, Phi-3 with partial rotary 0.75), which
    carries a tokenizer. Tests only read these folders."""
    return {hf_class: m.baked for hf_class, m in demo_models.items()}


@pytest.fixture(scope="session")
def gguf_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gguf_out")


@functools.lru_cache(maxsize=None)
def converted(src: Path, out_dir: Path, outtype: str = "f32", factor_sets: str = "pair") -> Path:
    """Convert once per (model, outtype, factor sets) for the whole session."""
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf

    out = out_dir / f"{src.parent.name}-{outtype}-{factor_sets}.gguf"
    convert_hf_to_gguf(src, out, outtype=outtype, factor_sets=factor_sets, progress=False)
    return out


def token_ids(length: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 512, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@functools.lru_cache(maxsize=None)
def reference_logits(baked: Path, length: int, factor_set, spec=None) -> torch.Tensor:
    """float64 reference logits [T, vocab] with the given factor set forced."""
    from longrope_convert.verify.reference_model import ReferenceDecoder

    ref = ReferenceDecoder(baked, dtype=torch.float64, spec=spec)
    return ref.forward(torch.tensor([token_ids(length, seed=length)]), factor_set=factor_set).logits[0]


def llama_cpp_comparison(gguf: Path, baked: Path, length: int, n_ctx: int, factor_set, spec=None):
    """compare_logits(reference with `factor_set`, llama.cpp on `gguf` at context n_ctx)."""
    from longrope_convert.verify.llama_cpp_runner import llama_cpp_logits
    from longrope_convert.verify.metrics import compare_logits

    got = llama_cpp_logits(gguf, token_ids(length, seed=length), n_ctx)
    return compare_logits(reference_logits(baked, length, factor_set, spec), torch.from_numpy(np.asarray(got)))
