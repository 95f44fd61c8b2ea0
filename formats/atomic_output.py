"""Outputs appear whole or not at all: everything is written under a temp name beside OUT, then renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from .errors import OutputPathError

PARTIAL_MARK = ".partial-"


def check_output_path(out: Path, inputs: Sequence[Path], force: bool) -> None:
    """Refuse outputs that equal or sit inside an input, inputs inside the output, or exist without --force."""
    out_r = out.resolve()
    for src in inputs:
        src_r = src.resolve()
        if out_r == src_r:
            raise OutputPathError("output is the same path as the input", out)
        if src_r.is_dir() and src_r in out_r.parents:
            raise OutputPathError(f"output is inside the input folder {src}", out)
        if src_r != out_r and out_r in src_r.parents and force:
            raise OutputPathError(f"input {src} is inside the output; --force would delete it", out)
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputPathError("already exists; pass --force to replace it", out)
    parent = out_r.parent
    if not parent.is_dir():
        raise OutputPathError(f"parent folder {parent} does not exist", out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"parent folder {parent} is not writable", out)


@contextlib.contextmanager
def atomic_output_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on any failure it is removed."""
    tmp = _make_temp(out, tempfile.mkdtemp)
    try:
        yield tmp
        _replace(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_output_file(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp file path beside `out`; on success it is renamed onto `out`."""
    tmp = _make_temp(out, _mkstemp_closed)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        _replace(tmp, out, force)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _mkstemp_closed(prefix: str, dir: Path) -> str:
    fd, name = tempfile.mkstemp(prefix=prefix, dir=dir)
    os.close(fd)
    return name


def _make_temp(out: Path, make) -> Path:
    """Create the temp file/folder beside `out`; an unwritable location is a user error, not a crash."""
    try:
        return Path(make(prefix=f".{out.name}{PARTIAL_MARK}", dir=out.resolve().parent))
    except OSError as exc:
        raise OutputPathError(f"cannot write beside the output ({exc.strerror})", out) from None


def _replace(tmp: Path, out: Path, force: bool) -> None:
    if not (out.exists() or out.is_symlink()):
        os.rename(tmp, out)
        return
    if not force:
        raise OutputPathError("appeared while we were writing; refusing to overwrite without --force", out)
    trash = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, trash)
    os.rename(tmp, out)
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink()
