"""The tokenizer inside a GGUF: SentencePiece `tokenizer.model` or byte-level BPE `tokenizer.json`, through
gguf-py's vocab readers (SentencePieceVocab, BpeVocab) and SpecialVocab (special ids, merges, chat template).

The token list is padded to the model's vocab size (llama.cpp checks it against the output matrix), as
llama.cpp's converter does with `[PAD{i}]` entries.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from ..errors import ConfigError

log = logging.getLogger(__name__)
TT = gguf.TokenType
ENDOFTEXT = "<|endoftext|>"

# tokenizer.json pre-tokenizer regex -> llama.cpp's `tokenizer.ggml.pre` name (unknown ones fall back to default)
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_BY_REGEX = {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}
BYTE_LEVEL_PRE = "gpt-2"  # a bare ByteLevel pre-tokenizer uses GPT-2's regex


@dataclass
class GgufVocab:
    """Everything the GGUF's tokenizer keys hold."""

    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    pre: str
    tokens: list[bytes]
    scores: list[float]
    types: list[int]
    special: gguf.SpecialVocab = field(repr=False)

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        self.special.add_to_gguf(writer, quiet=True)


def has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.model").is_file() or (folder / "tokenizer.json").is_file()


def read_vocab(folder: Path, vocab_size: int, require_endoftext: bool = False) -> GgufVocab:
    """Read the checkpoint's tokenizer (SentencePiece first, as llama.cpp does) and pad it to `vocab_size`."""
    if (folder / "tokenizer.model").is_file():
        vocab, model, pre = _read(gguf.SentencePieceVocab, folder), "llama", "default"
    elif (folder / "tokenizer.json").is_file():
        vocab, model, pre = _read(gguf.BpeVocab, folder), "gpt2", _bpe_pre(folder / "tokenizer.json")
    else:
        raise ConfigError("no tokenizer.model or tokenizer.json; pass --no-vocab to convert without a vocabulary",
                          folder)
    tokens, scores, types = _padded(vocab, vocab_size, folder)
    _apply_added_tokens_decoder(folder, tokens, scores, types)
    if require_endoftext and ENDOFTEXT.encode() not in tokens:
        raise ConfigError(f"llama.cpp refuses a phi3 model whose vocabulary lacks {ENDOFTEXT}", folder)
    special = gguf.SpecialVocab(folder, load_merges=model == "gpt2", n_vocab=len(tokens))
    return GgufVocab(model, pre, tokens, scores, types, special)


def _read(kind, folder: Path):
    try:
        return kind(folder)
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the tokenizer as {kind.__name__} ({exc})", folder) from None
    except RuntimeError as exc:  # sentencepiece's parse failures
        raise ConfigError(f"tokenizer.model is not a SentencePiece model ({exc})", folder) from None


def _padded(vocab, vocab_size: int, folder: Path) -> tuple[list[bytes], list[float], list[int]]:
    tokens, scores, types = [], [], []
    for text, score, toktype in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(int(toktype))
    if len(tokens) > vocab_size:
        raise ConfigError(f"tokenizer has {len(tokens)} tokens but the model's vocab_size is {vocab_size}", folder)
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-10000.0)
        types.append(int(TT.UNUSED))
    return tokens, scores, types


def _apply_added_tokens_decoder(folder: Path, tokens: list[bytes], scores: list[float], types: list[int]) -> None:
    """tokenizer_config.json's added_tokens_decoder overrides ids, as llama.cpp's converter does (specials become
    CONTROL, <unk> included; Phi-3 keeps its chat tokens there)."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    try:
        decoder = json.loads(path.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ConfigError("tokenizer_config.json is not valid JSON", path) from None
    for token_id, data in decoder.items():
        i = int(token_id)
        if not (0 <= i < len(tokens) and isinstance(data, dict) and "content" in data):
            continue
        tokens[i] = data["content"].encode("utf-8")
        scores[i] = -1000.0
        types[i] = int(TT.CONTROL if data.get("special") else TT.USER_DEFINED)


def _bpe_pre(tokenizer_json: Path) -> str:
    """llama.cpp's pre-tokenizer name for a tokenizer.json, from its pre-tokenizer regex."""
    pre = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for part in parts:
        regex = (part.get("pattern") or {}).get("Regex") if part.get("type") == "Split" else None
        if regex in PRE_BY_REGEX:
            return PRE_BY_REGEX[regex]
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        return BYTE_LEVEL_PRE
    log.warning("%s: unknown pre-tokenizer; llama.cpp will use its default splitting", tokenizer_json)
    return "default"
