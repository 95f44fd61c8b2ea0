"""Seeded tiny tokenizers written into a tiny checkpoint folder, with exactly the model's vocab size.

Two kinds, built in-process (never downloaded) so tests and the demo can convert a complete checkpoint:
- `write_bpe_tokenizer`: a byte-level BPE `tokenizer.json` (LLaMA-3 / Qwen2 style), trained with `tokenizers`.
- `write_sentencepiece_tokenizer`: a SentencePiece `tokenizer.model` (LLaMA-2 / Mistral / Phi-3 style).
Both get `tokenizer_config.json` (special tokens, chat template) and `special_tokens_map.json`. Training text is
generated from a seeded RNG and both trainers run single-threaded, so the same bytes come out on every run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TINY_VOCAB_SIZE = 512
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
ENDOFTEXT = "<|endoftext|>"  # llama.cpp's phi3 vocab check requires this token
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CHAT_TOKENS = ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>")
_LETTERS = "etaoinshrdlucmfwypvbgkjqxz"


def tiny_training_text(seed: int = 0, n_lines: int = 3000) -> list[str]:
    """Pseudo-English lines from a seeded RNG: enough distinct words for a 512-token vocabulary."""
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) for i in range(len(_LETTERS))]
    words = ["".join(rng.choices(_LETTERS, weights, k=rng.randint(1, 8))) for _ in range(2000)]
    lines = []
    for _ in range(n_lines):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        lines.append(line.capitalize() + rng.choice(".,;!?") + (" 123" if rng.random() < 0.1 else ""))
    return lines


def write_bpe_tokenizer(folder: Path, vocab_size: int = TINY_VOCAB_SIZE, seed: int = 0) -> Path:
    """Byte-level BPE tokenizer.json with <s>, </s>, <|endoftext|> and chat tokens; padded to `vocab_size`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = [BOS, EOS, ENDOFTEXT, *CHAT_TOKENS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_training_text(seed), trainer=trainer)
    _pad_added_tokens(tok, vocab_size)
    folder = Path(folder)
    tok.save(str(folder / "tokenizer.json"))
    _write_tokenizer_config(folder, "PreTrainedTokenizerFast", specials, tok.token_to_id)
    return folder / "tokenizer.json"


def _pad_added_tokens(tok, vocab_size: int) -> None:
    """Fill the vocabulary up to exactly `vocab_size` with special padding tokens (as real models do)."""
    from tokenizers import AddedToken

    have = tok.get_vocab_size(with_added_tokens=True)
    if have > vocab_size:
        raise ValueError(f"tokenizer has {have} tokens, more than the model's {vocab_size}")
    tok.add_special_tokens([AddedToken(f"<|pad_{i}|>", special=True) for i in range(vocab_size - have)])


def write_sentencepiece_tokenizer(folder: Path, vocab_size: int = TINY_VOCAB_SIZE, seed: int = 0) -> Path:
    """SentencePiece BPE tokenizer.model (byte fallback, <unk>/<s>/</s> at 0/1/2) with exactly `vocab_size` pieces;
    <|endoftext|> and the chat tokens are user-defined pieces, as Phi-3 has them."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_training_text(seed)), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, num_threads=1, seed_sentencepiece_size=10000,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, user_defined_symbols=[ENDOFTEXT, *CHAT_TOKENS],
        hard_vocab_limit=True, minloglevel=2, shuffle_input_sentence=False,
    )
    folder = Path(folder)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    _write_tokenizer_config(folder, "LlamaTokenizer", [UNK, BOS, EOS, ENDOFTEXT, *CHAT_TOKENS], processor.piece_to_id)
    return folder / "tokenizer.model"


def _write_tokenizer_config(folder: Path, tokenizer_class: str, specials: list[str], token_id) -> None:
    added = {
        str(token_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True}
        for t in specials
    }
    config = {
        "tokenizer_class": tokenizer_class,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK if UNK in specials else None,
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 1024,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special_map = {"bos_token": BOS, "eos_token": EOS}
    if UNK in specials:
        special_map["unk_token"] = UNK
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")


TOKENIZER_WRITERS = {"bpe": write_bpe_tokenizer, "sentencepiece": write_sentencepiece_tokenizer}


def write_tiny_tokenizer(folder: Path, kind: str, vocab_size: int = TINY_VOCAB_SIZE, seed: int = 0) -> Path:
    """Write a tiny tokenizer of `kind` ('bpe' or 'sentencepiece') into a checkpoint folder."""
    return TOKENIZER_WRITERS[kind](Path(folder), vocab_size, seed)
