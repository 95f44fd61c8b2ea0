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
    reader = gguf.GGUFReader(converted(gguf_models[hf_class], gguf_out, "f16", "pair"))
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
    folder = gguf_models[hf_class]  # Qwen2 too: arch llama with its pair of factor sets
    llm = llama_cpp.Llama(model_path=str(converted(folder, gguf_out, "f16", "pair")), vocab_only=True,
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


def test_qwen2_pre_tokenizer_under_arch_llama(gguf_models, tmp_path):
    """Qwen2's own tokenizer.json split regex -> tokenizer.ggml.pre = qwen2 in an arch-llama GGUF: llama.cpp picks
    its pre-tokenizer by that name whatever the arch, loads the model and splits digits one by one as Qwen2 does."""
    import json
    import shutil

    llama_cpp = pytest.importorskip("llama_cpp")
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf
    from longrope_convert.formats.gguf.vocab import QWEN2_REGEX
    from longrope_convert.verify.llama_cpp_runner import llama_cpp_logits
    from tokenizers import Tokenizer

    src = tmp_path / "qwen2"
    shutil.copytree(gguf_models["Qwen2ForCausalLM"], src)
    data = json.loads((src / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    (src / "tokenizer.json").write_text(json.dumps(data))
    out = convert_hf_to_gguf(src, tmp_path / "q.gguf", outtype="f32", progress=False).output
    kv = {k: field_value(f) for k, f in gguf.GGUFReader(out).fields.items()}
    assert (kv["general.architecture"], kv["tokenizer.ggml.pre"]) == ("llama", "qwen2")
    llm = llama_cpp.Llama(model_path=str(out), vocab_only=True, verbose=False)
    ours = llm.tokenize(SAMPLE.encode(), add_bos=False, special=True)
    expected = Tokenizer.from_file(str(src / "tokenizer.json")).encode(SAMPLE).ids
    assert ours == expected
    digits = llm.tokenize(b" 12345", add_bos=False, special=False)
    assert len(digits) >= 5  # one token per digit (Qwen2's \p{N}), not GPT-2's digit runs
    assert llama_cpp_logits(out, ours[:8], 256).shape == (8, 512)
