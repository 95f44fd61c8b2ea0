"""hf-to-gguf refuses bad input with one typed line and exit 2, leaves nothing at OUT and the inputs untouched:
the cases only GGUF has (a quantizer type without llama-cpp-python, tokenizers, a failure mid-write). The shared corpus runs in
tests/reliability/test_bad_inputs.py."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from longrope_convert.convert.cli import main

from ..conftest import tree_digest
from ..reliability.corpus import Setup
from ..reliability.refusal import assert_refused
from .gguf_fixtures import gguf_models

__all__ = ["gguf_models"]


def baked_setup(tmp_path: Path, baked: Path) -> Setup:
    s = Setup.make(tmp_path, baked)
    s.out = tmp_path / "out.gguf"
    return s


def plain_argv(s: Setup, *extra: str) -> list[str]:
    return ["hf-to-gguf", str(s.src), "-o", str(s.out), *extra]


@pytest.mark.parametrize("outtype", ("q4_k_m", "q6_k", "q4_0"))
def test_quantizer_outtype_without_llama_cpp_names_the_extra(tmp_path, capsys, gguf_models, monkeypatch, outtype):
    """K-quants come from llama.cpp's quantizer only: without llama-cpp-python, one line naming the extra."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    s = baked_setup(tmp_path, gguf_models["LlamaForCausalLM"])
    assert_refused(s, plain_argv(s, "--outtype", outtype), capsys, f"--outtype {outtype}",
                   "pip install 'longrope-convert[llama]'")


def test_missing_tokenizer_needs_no_vocab(tmp_path, capsys, gguf_models):
    s = baked_setup(tmp_path, gguf_models["LlamaForCausalLM"])
    (s.src / "tokenizer.model").unlink()
    assert_refused(s, plain_argv(s), capsys, s.src, "--no-vocab")


def test_phi3_vocabulary_without_endoftext_is_refused(tmp_path, capsys, gguf_models):
    from longrope_convert.convert.demo.tiny_tokenizer import write_bpe_tokenizer

    s = baked_setup(tmp_path, gguf_models["Phi3ForCausalLM"])
    (s.src / "tokenizer.model").unlink()
    write_bpe_tokenizer(s.src)
    data = json.loads((s.src / "tokenizer.json").read_text())
    for token in data["added_tokens"]:
        if token["content"] == "<|endoftext|>":
            token["content"] = "<|eot|>"
    vocab = data["model"]["vocab"]
    vocab["<|eot|>"] = vocab.pop("<|endoftext|>")
    (s.src / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((s.src / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {}
    (s.src / "tokenizer_config.json").write_text(json.dumps(config))
    assert_refused(s, plain_argv(s), capsys, s.src, "<|endoftext|>")


def test_tokenizer_larger_than_model_vocab_is_refused(tmp_path, capsys, gguf_models):
    from longrope_convert.convert.demo.tiny_tokenizer import write_sentencepiece_tokenizer

    s = baked_setup(tmp_path, gguf_models["LlamaForCausalLM"])
    write_sentencepiece_tokenizer(s.src, vocab_size=600)
    assert_refused(s, plain_argv(s), capsys, s.src, "vocab_size is 512")


def test_factor_length_mismatch_for_partial_rotary(tmp_path, capsys, gguf_models):
    s = baked_setup(tmp_path, gguf_models["Phi3ForCausalLM"])  # rotary dim 12 -> 6 factors, the file has 8
    assert_refused(s, plain_argv(s, "--long-factors", str(s.long_factors)), capsys, s.long_factors,
                   "expected 6")


def test_existing_output_is_kept_without_force_and_replaced_with_it(tmp_path, capsys, gguf_models):
    s = baked_setup(tmp_path, gguf_models["LlamaForCausalLM"])
    s.out.write_bytes(b"precious")
    assert_refused(s, plain_argv(s), capsys, s.out, "--force")
    with pytest.raises(SystemExit) as exit_info:
        main(plain_argv(s, "--force"))
    assert exit_info.value.code == 0
    assert s.out.read_bytes()[:4] == b"GGUF"


def test_failure_while_writing_leaves_nothing(tmp_path, gguf_models, monkeypatch):
    """A shard that goes bad after validation (here: a read error mid-stream) leaves no partial GGUF."""
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf
    from longrope_convert.formats.errors import CheckpointError
    from longrope_convert.formats.gguf import tensors as gguf_tensors

    s = baked_setup(tmp_path, gguf_models["LlamaForCausalLM"])
    calls = {"n": 0}
    real = gguf_tensors._read_rows

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 5:
            raise CheckpointError("simulated read failure", s.src / "model.safetensors")
        return real(*args, **kwargs)

    monkeypatch.setattr(gguf_tensors, "_read_rows", failing)
    before = tree_digest(s.src)
    with pytest.raises(CheckpointError):
        convert_hf_to_gguf(s.src, s.out, progress=False)
    assert not s.out.exists() and not list(tmp_path.glob(".out.gguf.partial-*"))
    assert tree_digest(s.src) == before


def test_no_vocab_warns_and_llama_cpp_still_loads(tmp_path, gguf_models, caplog):
    pytest.importorskip("llama_cpp")
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf
    from longrope_convert.verify.llama_cpp_runner import llama_cpp_logits

    src = tmp_path / "src"
    shutil.copytree(gguf_models["LlamaForCausalLM"], src)
    (src / "tokenizer.model").unlink()
    with caplog.at_level("WARNING"):
        convert_hf_to_gguf(src, tmp_path / "nv.gguf", outtype="f32", no_vocab=True, progress=False)
    assert any("--no-vocab" in r.message for r in caplog.records)
    assert llama_cpp_logits(tmp_path / "nv.gguf", [1, 2, 3], 256).shape == (3, 512)
