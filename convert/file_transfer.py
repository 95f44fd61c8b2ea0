"""Carry files into an output folder unchanged: hard-link when the filesystem allows, else copy with progress."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from ..formats.errors import CheckpointError
from ..formats.input_paths import confined_file, present

log = logging.getLogger(__name__)
COPY_CHUNK = 16 * 1024 * 1024


def link_or_copy_all(files: list[Path], dest_dir: Path, allow_links: bool = True, desc: str = "weights") -> str:
    """Place each file in `dest_dir` under its own name; returns 'hard-linked', 'copied' or 'mixed'."""
    modes = set()
    total = sum(f.stat().st_size for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None, leave=False) as bar:
        for f in files:
            modes.add(_link_or_copy(f, dest_dir / f.name, bar, allow_links))
    return modes.pop() if len(modes) == 1 else "mixed"


def _link_or_copy(src: Path, dst: Path, bar: tqdm, allow_links: bool) -> str:
    if allow_links:
        try:
            os.link(src, dst)
            bar.update(src.stat().st_size)
            return "hard-linked"
        except OSError:
            pass
    with src.open("rb") as fi, dst.open("xb") as fo:  # never opens an existing file (e.g. a link to an input)
        while chunk := fi.read(COPY_CHUNK):
            fo.write(chunk)
            bar.update(len(chunk))
    shutil.copystat(src, dst)
    return "copied"


MAX_COMPANION_BYTES = 256 * 1024 * 1024  # tokenizer.json is the largest companion (~30 MB in real models)


def copy_small_files(src_dir: Path, names: tuple[str, ...], dest_dir: Path) -> list[str]:
    """Copy the named companion files that exist (tokenizer, generation config, licence). Each is confined to
    the checkpoint first (formats/input_paths.py): a link to a file outside SRC or a FIFO is refused, never
    copied into the output or blocked on."""
    copied = []
    for name in names:
        if not present(src_dir, name):
            continue
        f = confined_file(src_dir, name, CheckpointError, MAX_COMPANION_BYTES, "companion files")
        if (dest_dir / name).exists():  # e.g. a shard of that name, hard-linked to SRC: never write through it
            raise CheckpointError(f"{name} is both a weight file and a companion file", src_dir)
        shutil.copy2(f, dest_dir / name)
        copied.append(name)
    return copied
