"""The tokenizer inside a GGUF: SentencePiece `tokenizer.model` or byte-level BPE `tokenizer.json`, through
gguf-py's vocab readers (SentencePieceVocab, BpeVocab) and SpecialVocab (special ids, merges, chat template).

The token list is padded to the model's vocab size (llama.cpp checks it against the output matrix), as
llama.cpp's converter does with `[PAD{i}]` entries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from ..errors import ConfigError
from ..input_paths import confined_file, confined_files, present
from ..json_io import read_json

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

# Every file gguf-py's vocab readers may open in the checkpoint folder, with its size cap: checked (confined to
# the checkpoint, regular, not too large) before gguf-py reads any of them whole.
MAX_TOKENIZER_BYTES = 256 * 1024 * 1024  # the largest real tokenizer.json files are ~30 MB
MAX_TOKENIZER_SIDE_BYTES = 32 * 1024 * 1024  # tokenizer_config.json, templates: KBs to a few MB
TOKENIZER_FILES = {
    "tokenizer.model": MAX_TOKENIZER_BYTES, "tokenizer.json": MAX_TOKENIZER_BYTES,
    "vocab.json": MAX_TOKENIZER_BYTES, "merges.txt": MAX_TOKENIZER_BYTES,
    "tokenizer_config.json": MAX_TOKENIZER_SIDE_BYTES, "added_tokens.json": MAX_TOKENIZER_SIDE_BYTES,
    "special_tokens_map.json": MAX_TOKENIZER_SIDE_BYTES, "chat_template.jinja": MAX_TOKENIZER_SIDE_BYTES,
    "chat_template.json": MAX_TOKENIZER_SIDE_BYTES,
}
EXTRA_TEMPLATES = "additional_chat_templates"


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
    return present(folder, "tokenizer.model") or present(folder, "tokenizer.json")


def read_vocab(folder: Path, vocab_size: int, require_endoftext: bool = False) -> GgufVocab:
    """Read the checkpoint's tokenizer (SentencePiece first, as llama.cpp does) and pad it to `vocab_size`."""
    check_tokenizer_files(folder)
    if present(folder, "tokenizer.model"):
        vocab, model, pre = _read(gguf.SentencePieceVocab, folder), "llama", "default"
    elif present(folder, "tokenizer.json"):
        pre = _bpe_pre(folder / "tokenizer.json", _tokenizer_json(folder / "tokenizer.json"))
        vocab, model = _read(gguf.BpeVocab, folder), "gpt2"
    else:
        raise ConfigError("no tokenizer.model or tokenizer.json; pass --no-vocab to convert without a vocabulary",
                          folder)
    tokens, scores, types = _padded(vocab, vocab_size, folder)
    _apply_added_tokens_decoder(folder, tokens, scores, types)
    if require_endoftext and ENDOFTEXT.encode() not in tokens:
        raise ConfigError(f"llama.cpp refuses a phi3 model whose vocabulary lacks {ENDOFTEXT}", folder)
    special = _read(lambda f: gguf.SpecialVocab(f, load_merges=model == "gpt2", n_vocab=len(tokens)), folder,
                    "special tokens")
    return GgufVocab(model, pre, tokens, scores, types, special)


def check_tokenizer_files(folder: Path) -> None:
    """Every tokenizer file gguf-py may open: inside the checkpoint, a regular file, under its size cap."""
    for name, cap in TOKENIZER_FILES.items():
        confined_files(folder, [name], ConfigError, cap, "tokenizer files")
    extra = folder / EXTRA_TEMPLATES
    if present(folder, EXTRA_TEMPLATES):
        if extra.is_symlink() or not extra.is_dir():
            raise ConfigError("must be a plain folder of chat templates", extra)
        for template in sorted(extra.glob("*.jinja")):
            confined_file(folder, f"{EXTRA_TEMPLATES}/{template.name}", ConfigError, MAX_TOKENIZER_SIDE_BYTES,
                          "tokenizer files")


def _read(kind, folder: Path, what: str | None = None):
    """gguf-py's reader `kind` on `folder`; whatever a malformed tokenizer makes it raise is bad input (exit 2)."""
    what = what or f"the tokenizer as {kind.__name__}"
    try:
        return kind(folder)
    except RuntimeError as exc:  # sentencepiece's parse failures
        raise ConfigError(f"tokenizer.model is not a SentencePiece model ({_short(exc)})", folder) from None
    except Exception as exc:  # noqa: BLE001 - gguf-py indexes the parsed JSON directly (KeyError, TypeError, ...)
        raise ConfigError(f"cannot read {what} ({type(exc).__name__}: {_short(exc)})", folder) from None


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def _tokenizer_json(path: Path) -> dict:
    """tokenizer.json, bounded and parsed once, its shape checked before gguf-py indexes into it."""
    data = read_json(path, ConfigError, MAX_TOKENIZER_BYTES)
    if not isinstance(data, dict):
        raise ConfigError(f"expected a JSON object, got a {type(data).__name__}", path)
    if not isinstance(data.get("model"), dict):
        raise ConfigError("has no 'model' object (not a Hugging Face tokenizers file)", path)
    return data


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
    if not present(folder, "tokenizer_config.json"):
        return
    path = confined_file(folder, "tokenizer_config.json", ConfigError)
    config = read_json(path, ConfigError, MAX_TOKENIZER_SIDE_BYTES)
    if not isinstance(config, dict):
        raise ConfigError(f"expected a JSON object, got a {type(config).__name__}", path)
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise ConfigError("'added_tokens_decoder' must map token ids to tokens", path)
    for token_id, data in decoder.items():
        i = int(token_id) if token_id.isdecimal() and len(token_id) < 12 else -1  # a key is a token id
        if not (0 <= i < len(tokens) and isinstance(data, dict) and isinstance(data.get("content"), str)):
            continue
        try:
            tokens[i] = data["content"].encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape (\ud800) in the JSON
            raise ConfigError(f"added token {i} is not valid Unicode", path) from None
        scores[i] = -1000.0
        types[i] = int(TT.CONTROL if data.get("special") else TT.USER_DEFINED)


def _bpe_pre(tokenizer_json: Path, data: dict) -> str:
    """llama.cpp's pre-tokenizer name for a tokenizer.json, from its pre-tokenizer regex."""
    pre = _object(data.get("pre_tokenizer"))
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    parts = [_object(p) for p in parts] if isinstance(parts, list) else []
    for part in parts:
        regex = _object(part.get("pattern")).get("Regex") if part.get("type") == "Split" else None
        if isinstance(regex, str) and regex in PRE_BY_REGEX:
            return PRE_BY_REGEX[regex]
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        return BYTE_LEVEL_PRE
    log.warning("%s: unknown pre-tokenizer; llama.cpp will use its default splitting", tokenizer_json)
    return "default"


def _object(value) -> dict:
    """A JSON object, or {} for anything else (null, a list, a string where an object belongs)."""
    return value if isinstance(value, dict) else {}
