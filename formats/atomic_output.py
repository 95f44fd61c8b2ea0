"""Outputs appear whole or not at all: everything is written under a temp name beside OUT, then renamed.

The one output policy every command shares (artifact folders and files, verify --json/--junit, inspect --plot):

* never inside an input, never the same file as an input (symlink or hard link included);
* only a regular file or folder is ever replaced, and only by its own kind (no folder -> file, no file -> folder,
  never a device node, FIFO or socket), and only with --force;
* temp files are created exclusively (O_EXCL | O_NOFOLLOW), so nothing is ever written through a link; the final
  rename replaces a link at OUT itself, never its target;
* a replace that fails half-way puts the old output back;
* the result gets ordinary permissions (0o666 / 0o777 minus the umask), not the temp file's private ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from .errors import OutputPathError

PARTIAL_MARK = ".partial-"
OLD_MARK = ".old-"
NAME_MAX_FALLBACK = 255
TEMP_TRIES = 100

Kind = Literal["file", "dir"]
_KIND_WORDS = {"file": "a file", "dir": "a folder"}


def check_output_path(out: Path, inputs: Sequence[Path], force: bool, kind: Kind | None = None) -> None:
    """Refuse outputs that equal or sit inside an input, inputs inside the output, anything but a regular
    file/folder of the right `kind` at OUT, or an existing OUT without --force."""
    out = Path(out)
    _check_not_input(out, [Path(p) for p in inputs], force)
    st = _lstat(out)
    if st is not None:
        check_replaceable(out, kind, st)
        if not force:
            raise OutputPathError("already exists; pass --force to replace it", out)
    parent = _parent(out)
    if not parent.is_dir():
        raise OutputPathError(f"parent folder {parent} does not exist", out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"parent folder {parent} is not writable", out)


def check_replaceable(out: Path, kind: Kind | None, st: os.stat_result | None = None) -> None:
    """Only a regular file, a folder or a link may sit at OUT, and a folder/file only where that kind is written."""
    st = st if st is not None else _lstat(out)
    if st is None or stat.S_ISLNK(st.st_mode):
        return  # a link is replaced itself by the final rename; its target is never touched
    if stat.S_ISDIR(st.st_mode):
        found: Kind = "dir"
    elif stat.S_ISREG(st.st_mode):
        found = "file"
    else:
        raise OutputPathError("is not a regular file or folder (a device, FIFO or socket); refusing to replace it",
                              out)
    if kind is not None and found != kind:
        raise OutputPathError(f"is {_KIND_WORDS[found]}; refusing to replace it with {_KIND_WORDS[kind]}", out)


def _check_not_input(out: Path, inputs: Sequence[Path], force: bool) -> None:
    """Compare both the link at OUT and whatever it points to: writing either must never touch an input."""
    out_abs = _parent(out) / out.name
    out_targets = {out_abs, out.resolve()}
    for src in inputs:
        src_r = src.resolve()
        if src_r in out_targets or _same_file(out, src):
            raise OutputPathError("output is the same path as the input", out)
        for out_r in out_targets:
            if src_r.is_dir() and src_r in out_r.parents:
                raise OutputPathError(f"output is inside the input folder {src}", out)
        if src_r != out_abs and out_abs in src_r.parents and force:
            raise OutputPathError(f"input {src} is inside the output; --force would delete it", out)


@contextlib.contextmanager
def atomic_output_dir(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on any failure it is removed."""
    out = Path(out)
    check_replaceable(out, "dir")  # before any work: never build a folder meant to replace a file
    tmp = _make_temp(out, _mkdir_private)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdir(0o700) kept the partial folder private; the result is not
        _replace(tmp, out, force, "dir")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_output_file(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp file path beside `out`; on success it is renamed onto `out`, on any failure it is removed."""
    out = Path(out)
    check_replaceable(out, "file")  # before any work: never write a file meant to replace a folder or a device
    tmp = _make_temp(out, _create_private_file)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # a writer may have copied a source's mode; outputs get the usual one
        _replace(tmp, out, force, "file")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def sibling_name(out: Path, mark: str, suffix: str) -> str:
    """`.NAME<mark><suffix>` in OUT's folder; when that would pass NAME_MAX (a 250-character output name),
    NAME is cut and a hash of it added so two long names still get different temp names."""
    name_max = _name_max(_parent(out))
    name = f".{out.name}{mark}{suffix}"
    if len(os.fsencode(name)) <= name_max:
        return name
    digest = hashlib.sha256(os.fsencode(out.name)).hexdigest()[:12]
    room = name_max - len(os.fsencode(f".~{digest}{mark}{suffix}"))
    head = out.name
    while len(os.fsencode(head)) > room:
        head = head[:-1]
    return f".{head}~{digest}{mark}{suffix}"


def _make_temp(out: Path, make: Callable[[Path], None]) -> Path:
    """Create the temp file/folder beside `out` under a fresh random name; an unwritable location is a user
    error, not a crash."""
    parent = _parent(out)
    for _ in range(TEMP_TRIES):
        tmp = parent / sibling_name(out, PARTIAL_MARK, secrets.token_hex(4))
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputPathError(f"cannot write beside the output ({exc.strerror})", out) from None
    raise OutputPathError("cannot find a free temp name beside the output", out)


def _create_private_file(tmp: Path) -> None:
    """O_EXCL | O_NOFOLLOW: the temp name is ours alone, never an existing file or a link planted there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    os.close(os.open(tmp, flags, 0o600))


def _mkdir_private(tmp: Path) -> None:
    os.mkdir(tmp, 0o700)  # mkdir fails on any existing entry, a link included


def _replace(tmp: Path, out: Path, force: bool, kind: Kind) -> None:
    """Rename `tmp` onto `out`; an existing `out` is moved aside first and put back if the rename fails."""
    st = _lstat(out)
    if st is None:
        try:
            os.rename(tmp, out)
        except OSError as exc:  # something appeared at OUT in the meantime (a folder, say)
            raise OutputPathError(f"could not be written ({exc.strerror or exc})", out) from None
        return
    if not force:
        raise OutputPathError("appeared while we were writing; refusing to overwrite without --force", out)
    check_replaceable(out, kind, st)  # it may have changed while we were writing
    trash = _parent(out) / sibling_name(out, OLD_MARK, str(os.getpid()))
    os.rename(out, trash)
    try:
        os.rename(tmp, out)
    except BaseException as exc:
        _restore(trash, out)
        if isinstance(exc, OSError):
            raise OutputPathError(f"could not replace it ({exc.strerror or exc}); the old output was kept",
                                  out) from None
        raise  # interrupted between the two renames: the old output is back, the interrupt goes on
    _remove(trash)


def _restore(trash: Path, out: Path) -> None:
    """Put the old output back; if even that fails, say where it is rather than losing it silently."""
    try:
        os.rename(trash, out)
    except OSError as exc:
        raise OutputPathError(f"could not replace it, and the old output could not be put back "
                              f"({exc.strerror or exc}); it is at {trash}", out) from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _lstat(path: Path) -> os.stat_result | None:
    """Whatever sits at `path` itself (a link is not followed); None when nothing does."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputPathError(f"cannot be examined ({exc.strerror})", path) from None


def _parent(out: Path) -> Path:
    """OUT's real folder; OUT itself is not resolved, so a link at OUT stays the thing being replaced."""
    return out.absolute().parent.resolve()


def _same_file(out: Path, src: Path) -> bool:
    """A hard link (or link) at OUT to an input file is that input."""
    try:
        return os.path.samefile(out, src)
    except OSError:
        return False


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return NAME_MAX_FALLBACK


def _umask() -> int:
    """The process umask. Python has no getter: read it from /proc where possible, since setting and restoring
    it leaves a short window in which another thread would create files with a zero umask."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
