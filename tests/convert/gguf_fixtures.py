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
    from longrope_convert.formats.hf.checkpoint import open_checkpoint
    from longrope_convert.verify.reference_model import ReferenceDecoder

    checkpoint = open_checkpoint(baked)
    # where llama.cpp's graph routes experts its own way (PhiMoE), compare the rope against that same routing
    ref = ReferenceDecoder(checkpoint, dtype=torch.float64, spec=spec, moe_routing=checkpoint.arch.gguf_moe_routing)
    return ref.forward(torch.tensor([token_ids(length, seed=length)]), factor_set=factor_set).logits[0]


def llama_cpp_comparison(gguf: Path, baked: Path, length: int, n_ctx: int, factor_set, spec=None):
    """compare_logits(reference with `factor_set`, llama.cpp on `gguf` at context n_ctx)."""
    from longrope_convert.verify.llama_cpp_runner import llama_cpp_logits
    from longrope_convert.verify.metrics import compare_logits

    got = llama_cpp_logits(gguf, token_ids(length, seed=length), n_ctx)
    return compare_logits(reference_logits(baked, length, factor_set, spec), torch.from_numpy(np.asarray(got)))


# K-quants work on blocks of 256 values per row: the demo's hidden size 64 would make llama.cpp's quantizer fall back
# (Q4_K -> Q5_0, Q6_K -> Q8_0) for every matrix, so K-quant tests use rows of 256 and 512.
KQUANT_SHAPE = {"hidden_size": 256, "intermediate_size": 512, "head_dim": 64, "num_heads": 4, "num_kv_heads": 2}


def write_kquant_model(root: Path, hf_class: str, seed: int = 4321) -> Path:
    """A baked tiny checkpoint (L_orig 256 -> 1024, the demo's example factors and tokenizer) whose matrix rows
    are multiples of 256; returns the baked folder."""
    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.models import DEMO_MAX, write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint
    from longrope_convert.convert.demo.tiny_tokenizer import write_tiny_tokenizer
    from longrope_convert.formats.spec_inputs import SpecRequest

    partial, tokenizer = DEMO_MODELS[hf_class]
    shape = TinyShape(original_max_position_embeddings=L_ORIG, partial_rotary_factor=partial, **KQUANT_SHAPE)
    base = root / hf_class
    plain = write_tiny_checkpoint(base / "plain", hf_class, shape, seed=seed)
    write_tiny_tokenizer(plain, tokenizer, shape.vocab_size)
    long_path, short_path = write_example_factor_files(base, int(shape.head_dim * partial))
    request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=DEMO_MAX)
    return bake_checkpoint(plain, base / "longrope", request).output


FACTOR_TENSORS = {"rope_factors_long.weight", "rope_factors_short.weight"}


def strip_tensors(src, dst, drop: set[str], drop_keys: tuple[str, ...] = ("GGUF.",)) -> None:
    """Copy a GGUF without the tensors named in `drop` and keys starting with `drop_keys`."""
    import gguf
    from longrope_convert.formats.gguf.reader import field_value

    reader = gguf.GGUFReader(src)
    arch = field_value(reader.fields["general.architecture"])
    writer = gguf.GGUFWriter(dst, arch)
    for key, field in reader.fields.items():
        if key.startswith(drop_keys) or key == "general.architecture":
            continue
        sub = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(key, field_value(field), field.types[0], sub_type=sub)
    for t in reader.tensors:
        if t.name not in drop:
            writer.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
