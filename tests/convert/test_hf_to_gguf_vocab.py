"""Tiny tokenizers are deterministic and exactly vocab-sized; the GGUF's vocabulary tokenizes like the original
(SentencePiece and byte-level BPE) and carries special tokens and the chat template."""

from __future__ import annotations

import hashlib

import gguf
import pytest
from longrope_convert.convert.demo.tiny_tokenizer import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    TINY_VOCAB_SIZE,
    tiny_training_text,
    write_tiny_tokenizer,
)
from longrope_convert.formats.gguf.reader import field_value

from .gguf_fixtures import TOKENIZER_KIND, converted, gguf_models, gguf_out

__all__ = ["gguf_models", "gguf_out"]
SAMPLE = " ".join(tiny_training_text(seed=7, n_lines=5)) + " Hello, world! 12345 " + ENDOFTEXT


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("kind", ("bpe", "sentencepiece"))
def test_tiny_tokenizer_is_deterministic_and_vocab_sized(tmp_path, kind):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write_tiny_tokenizer(a, kind), write_tiny_tokenizer(b, kind)
    assert digest(a) == digest(b)
    if kind == "bpe":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(a / "tokenizer.json"))
        assert tok.get_vocab_size(with_added_tokens=True) == TINY_VOCAB_SIZE
        assert tok.token_to_id(ENDOFTEXT) is not None
    else:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(a / "tokenizer.model"))
        assert sp.vocab_size() == TINY_VOCAB_SIZE
        assert sp.piece_to_id(ENDOFTEXT) != sp.unk_id()


@pytest.mark.parametrize("hf_class", ("LlamaForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM"))
def test_vocab_keys(gguf_models, gguf_out, hf_class):
    factor_sets = "long" if hf_class == "Qwen2ForCausalLM" else "pair"
    reader = gguf.GGUFReader(converted(gguf_models[hf_class], gguf_out, "f16", factor_sets))
    kv = {k: field_value(f) for k, f in reader.fields.items()}
    bpe = TOKENIZER_KIND[hf_class] == "bpe"
    assert kv["tokenizer.ggml.model"] == ("gpt2" if bpe else "llama")
    assert kv["tokenizer.ggml.pre"] == ("gpt-2" if bpe else "default")
    assert len(kv["tokenizer.ggml.tokens"]) == TINY_VOCAB_SIZE
    assert ENDOFTEXT in kv["tokenizer.ggml.tokens"]
    assert kv["tokenizer.chat_template"] == CHAT_TEMPLATE
    tokens = kv["tokenizer.ggml.tokens"]
    assert tokens[kv["tokenizer.ggml.bos_token_id"]] == "<s>"
    assert tokens[kv["tokenizer.ggml.eos_token_id"]] == "</s>"
    assert ("tokenizer.ggml.merges" in kv) == bpe


@pytest.mark.parametrize("hf_class", ("LlamaForCausalLM", "Qwen2ForCausalLM", "Phi3ForCausalLM"))
def test_llama_cpp_tokenizes_like_the_original(gguf_models, gguf_out, hf_class):
    llama_cpp = pytest.importorskip("llama_cpp")
    factor_sets = "long" if hf_class == "Qwen2ForCausalLM" else "pair"
    folder = gguf_models[hf_class]
    llm = llama_cpp.Llama(model_path=str(converted(folder, gguf_out, "f16", factor_sets)), vocab_only=True,
                          verbose=False)
    ours = llm.tokenize(SAMPLE.encode(), add_bos=False, special=True)
    if TOKENIZER_KIND[hf_class] == "bpe":
        from tokenizers import Tokenizer

        expected = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(SAMPLE).ids
    else:
        import sentencepiece as spm

        expected = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).encode(SAMPLE)
    assert ours == expected
    assert len(ours) > 100
