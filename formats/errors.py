"""Typed user-facing errors: each carries a one-line message and maps to exit code 2."""

from __future__ import annotations

from pathlib import Path


class LongRopeError(Exception):
    """Base for every error a user can cause; the CLI prints the message on one line and exits 2."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        text = _escape_controls(" ".join(str(message).split()))  # one line, whatever the caller passed
        super().__init__(f"{display_path(self.path)}: {text}" if self.path else text)


def display_path(path: str | Path) -> str:
    """A path as written in a one-line message: as is, or quoted with escapes (repr) when it holds a newline or
    another control character, so a hostile file name can neither split the line nor hide in it."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def _escape_controls(text: str) -> str:
    """Escape what whitespace-joining left: control and other unprintable characters (ESC, NUL, surrogates)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class FactorFileError(LongRopeError):
    """A factor file is unreadable, malformed, or holds unusable values."""


class ConfigError(LongRopeError):
    """config.json is missing, malformed, or describes something we cannot handle."""


class UnsupportedArchitectureError(ConfigError):
    """The checkpoint's architecture is not in the registry."""


class CheckpointError(LongRopeError):
    """Weights are missing, truncated, corrupt, or unsafe to load."""


class OutputPathError(LongRopeError):
    """The output path cannot be written (exists, is inside the input, unwritable, ...)."""


class SpecError(LongRopeError):
    """The LongRoPE numbers are inconsistent (lengths, scales, attention factor)."""
