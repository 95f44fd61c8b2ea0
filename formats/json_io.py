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
    data = read_bounded(path, error, max_bytes, "JSON input")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"not valid JSON ({exc})", path) from None
