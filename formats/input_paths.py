"""Inputs confined to the checkpoint: every file we read from SRC resolves inside SRC (or, for a Hugging Face cache
snapshot, inside its cache repository folder) and is a regular file, checked before it is opened.

An HF cache snapshot is `.../models--ORG--NAME/snapshots/REV/` whose files are symlinks into `../../blobs/`, so
the confinement root of a snapshot is `models--ORG--NAME`. Links pointing anywhere else could make a crafted
checkpoint read (and bake copy into its output) any file of the machine; a FIFO named `*.safetensors` would block
the first read forever. Both are refused with one line naming the file, before anything opens it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import CheckpointError, LongRopeError

HF_CACHE_PREFIXES = ("models--",)  # datasets--/spaces-- never hold checkpoints


def confinement_root(folder: str | Path) -> Path:
    """The folder every input of `folder` must resolve inside: itself (resolved), or its HF cache repository
    folder when it is a cache snapshot."""
    real = Path(folder).resolve()
    if real.parent.name == "snapshots" and real.parent.parent.name.startswith(HF_CACHE_PREFIXES):
        return real.parent.parent
    return real


def confined_file(folder: str | Path, name: str, error: type[LongRopeError] = CheckpointError,
                  max_bytes: int | None = None, what: str = "this file") -> Path:
    """`folder / name`, checked without opening it: it exists, resolves inside the confinement root, is a
    regular file and (when `max_bytes` is given) is at most that large. Returns the path as named (messages
    keep naming what the user sees); raises `error` with a one-line message naming it otherwise."""
    path = Path(folder) / name
    try:
        real = path.resolve(strict=True)
        info = os.stat(real)
    except FileNotFoundError:
        dangling = os.path.islink(path)
        raise error("is a link to a missing file" if dangling else "file not found", path) from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop on older Pythons
        raise error(f"cannot resolve the file ({getattr(exc, 'strerror', None) or exc})", path) from None
    root = confinement_root(folder)
    if not real.is_relative_to(root):
        raise error(f"is a link to {real}, outside the checkpoint folder {root}; inputs must stay inside it", path)
    if not stat.S_ISREG(info.st_mode):
        raise error("not a regular file (a FIFO, device, socket or folder); inputs must be regular files", path)
    if max_bytes is not None and info.st_size > max_bytes:
        raise error(f"file is {info.st_size} bytes, over the {max_bytes} byte limit for {what}", path)
    return path


def present(folder: str | Path, name: str) -> bool:
    """Whether `folder / name` is there at all, as a link (even a dangling one) or any kind of file: what the
    callers confine, so that a FIFO or an outside link is refused rather than silently skipped."""
    return os.path.lexists(Path(folder) / name)


def confined_files(folder: str | Path, names, error: type[LongRopeError] = CheckpointError,
                   max_bytes: int | None = None, what: str = "this file") -> list[Path]:
    """`confined_file` for each of `names` that is present; absent ones are skipped."""
    return [confined_file(folder, n, error, max_bytes, what) for n in names if present(folder, n)]
