"""Bounded input reading: files are refused quickly when too large, never read into memory whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import LongRopeError

MAX_JSON_BYTES = 16 * 1024 * 1024  # a real config.json is a few KB; tokenizer.json is read elsewhere


def read_bounded(path: str | Path, error: type[LongRopeError], max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, raising `error` with a one-line message otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise error("not a regular file", path)
        if size > max_bytes:
            raise error(f"file is {size} bytes, over the {max_bytes} byte limit for {what}", path)
        with path.open("rb") as fh:
            return fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error("file not found", path) from None
    except OSError as exc:
        raise error(f"cannot read file ({exc.strerror})", path) from None


def read_json(path: str | Path, error: type[LongRopeError], max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file, raising `error` with a one-line message for missing, huge or malformed files."""
    return parse_json(read_bounded(path, error, max_bytes, "JSON input"), path, error)


def parse_json(data: bytes | str, path: str | Path, error: type[LongRopeError], what: str = "",
               reject_duplicates: bool = False) -> Any:
    """json.loads with every way it can fail as a one-line `error`: malformed text, bad UTF-8, nesting deeper
    than the interpreter's recursion limit (RecursionError), integers over Python's 4300-digit limit (ValueError)
    and, when asked, a key given twice (json keeps the last one silently)."""
    prefix = f"{what} is " if what else ""
    hook = _unique_keys if reject_duplicates else None
    try:
        return json.loads(data, object_pairs_hook=hook)
    except RecursionError:
        raise error(f"{prefix}JSON nested too deeply to be a real file", path) from None
    except _DuplicateKey as exc:
        raise error(f"{prefix}JSON with the key {exc.key!r} given twice", path) from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError, as is the digit limit
        raise error(f"{prefix}not valid JSON ({exc})", path) from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return result
