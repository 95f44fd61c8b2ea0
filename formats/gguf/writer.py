"""Streaming GGUF writing on top of gguf-py's GGUFWriter: header, metadata and tensor infos through it, then the
tensor data chunk by chunk, so no tensor (let alone the model) is ever held whole in memory.

Every chunk's place in the file is known before it is converted (the tensor infos fix each tensor's offset, and a
chunk's size follows from its rows), so WORKERS threads each take the next chunk, read it, convert it in their own
reused buffers and `pwrite` it at its offset: no ordering and no hand-over between threads, and the bytes are
written while still in the converting core's cache. preadv, numpy's passes and pwrite all release the GIL.
Measured on 2.2 GB bf16 -> f16 (bench/bench_hf_to_gguf.py, medians of 5 on a shared 2-core machine; docs/gguf.md
has the details): 10.4 s serial with the table lookup before, 2.2-2.6 s now, against 1.3-1.5 s for a plain `cat` of
the shards (1.66-1.82x; the 1.5x target needs both cores free). An earlier design, workers converting up to 6 chunks
ahead while the main thread wrote them in order, measured 4.5 s (table lookup, memory maps).
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

import gguf
import numpy as np

from . import tensors
from .tensors import Chunk, TensorPlan

# write() calls of at most 1 MB: measured here, 2.2 GB written in 32 MB calls cost 3-5 s of kernel time, in 1 MB
# calls 0.5 s (a chunk can exceed CHUNK_BYTES when one head or row is larger)
WRITE_BYTES = 1 << 20
WORKERS = 2  # the benchmark machine has 2 cores; the main thread only waits while the workers run


def write_gguf(
    path: Path, arch_name: str, add_metadata: Callable[[gguf.GGUFWriter], None], plans: Sequence[TensorPlan],
    progress: bool | None = None,
) -> None:
    """Write a single-file GGUF at `path`, normally an empty file the caller created (and makes atomic); the
    progress bar counts source bytes."""
    writer = _Writer(path, arch_name)
    add_metadata(writer)
    for plan in plans:
        writer.add_tensor_info(plan.name, _byte_shape(plan), np.dtype(np.uint8), plan.nbytes, raw_dtype=plan.qtype)
    bar = _progress_bar(sum(p.source_nbytes for p in plans), progress)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()  # flushes: the data section starts at the next aligned offset
        fd, position = writer.fout[0].fileno(), writer.fout[0].tell()  # type: ignore[index]
        start = gguf.GGUFWriter.ggml_pad(position, writer.data_alignment)
        end = _write_padding(fd, position, start, plans, writer.data_alignment)
        ChunkWriters(fd, _placed_chunks(plans, start, writer.data_alignment), bar).run()
        if os.fstat(fd).st_size != end:
            raise RuntimeError(f"GGUF is {os.fstat(fd).st_size} bytes, planned {end}")
    finally:
        bar.close()
        writer.close()


def _progress_bar(total: int, progress: bool | None):
    """tqdm counting source bytes where it shows (progress True, or None and stderr a terminal), else a stand-in:
    importing tqdm takes ~35 ms, 2% of converting 2.2 GB."""
    shown = progress if progress is not None else bool(sys.stderr and sys.stderr.isatty())
    if not shown:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="hf-to-gguf", file=sys.stderr)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class ChunkWriters:
    """WORKERS daemon threads that take (chunk, offset) pairs from one shared iterator, convert and pwrite them.

    The first exception in a worker (a CheckpointError from a bad shard, ENOSPC) stops the others after their
    current chunk and is raised by `run()` in the calling thread; an interrupt there (Ctrl-C, SIGTERM) stops them
    the same way. Each worker writes through its own duplicate of the file descriptor, so a worker still finishing
    its chunk can never write into another file that reuses the number after the caller closes the output."""

    def __init__(self, fd: int, placed: Iterator[tuple[Chunk, int]], progress, workers: int = WORKERS):
        self._fd = fd
        self._placed = placed
        self._progress = progress
        self._workers = workers
        self._lock = threading.Lock()  # guards the shared iterator, the bar and the first error
        self._stop = threading.Event()
        # one pwrite at a time: two concurrent ones make the kernel spin on the inode lock (rwsem_spin_on_owner,
        # 2.4-3.9% of all CPU time in profiles); waiting on this lock sleeps instead
        self._write_lock = threading.Lock()
        self._error: BaseException | None = None

    def run(self) -> None:
        threads = []
        try:
            for i in range(self._workers):
                threads.append(self._start(f"hf-to-gguf-{i}"))
            for thread in threads:
                thread.join()
        finally:
            self._stop.set()
        if self._error is not None:
            raise self._error

    def _start(self, name: str) -> threading.Thread:
        # the worker closes its descriptor; were the start to fail, it would stay open (never written to) rather
        # than be closed here under a thread that may be running already (an interrupt during start())
        thread = threading.Thread(target=self._work, args=(os.dup(self._fd),), name=name, daemon=True)
        thread.start()
        return thread

    def _work(self, fd: int) -> None:
        buffers = tensors.ChunkBuffers.of_size(tensors.CHUNK_BYTES)
        try:
            while not self._stop.is_set():
                with self._lock:
                    placed = next(self._placed, None)
                if placed is None:
                    return
                chunk, offset = placed
                data = chunk.convert(buffers)
                with self._write_lock:
                    _pwrite_all(fd, chunk, data, offset)
                with self._lock:
                    self._progress.update(chunk.source_nbytes)
        except BaseException as exc:  # noqa: BLE001 (handed to the calling thread, raised there by run())
            with self._lock:
                self._error = self._error or exc
            self._stop.set()
        finally:
            os.close(fd)


def _placed_chunks(plans: Sequence[TensorPlan], start: int, alignment: int) -> Iterator[tuple[Chunk, int]]:
    """Every chunk with its file offset: tensors follow each other padded to `alignment` (GGUFWriter's layout, the
    offsets its tensor infos hold), chunks follow each other within a tensor."""
    for plan in plans:
        offset = start
        for chunk in plan.chunks(tensors.CHUNK_BYTES):
            yield chunk, offset
            offset += chunk.nbytes
        if offset - start != plan.nbytes:
            raise RuntimeError(f"{plan.name}: chunks hold {offset - start} bytes, planned {plan.nbytes}")
        start += gguf.GGUFWriter.ggml_pad(plan.nbytes, alignment)


def _write_padding(fd: int, position: int, start: int, plans: Sequence[TensorPlan], alignment: int) -> int:
    """The zeros GGUFWriter writes before the first tensor (from `position`, the end of the tensor infos, to the
    aligned `start`) and after each tensor; returns the end of the file."""
    if not plans:
        return position
    pieces = [(position, start - position)]
    for plan in plans:
        padded = gguf.GGUFWriter.ggml_pad(plan.nbytes, alignment)
        pieces.append((start + plan.nbytes, padded - plan.nbytes))
        start += padded
    for offset, size in pieces:
        if size:
            os.pwrite(fd, bytes(size), offset)
    return start


def _pwrite_all(fd: int, chunk: Chunk, data: np.ndarray, offset: int) -> None:
    if data.nbytes != chunk.nbytes:
        raise RuntimeError(f"{chunk.plan.name}: a chunk converted to {data.nbytes} bytes, planned {chunk.nbytes}")
    view = memoryview(data.reshape(-1).view(np.uint8))  # views: converted chunks are contiguous
    while view:
        written = os.pwrite(fd, view[:WRITE_BYTES], offset)
        view, offset = view[written:], offset + written


class _Writer(gguf.GGUFWriter):
    """GGUFWriter with two measured changes, the bytes unchanged:

    - it writes into the empty file the caller created, opened without O_TRUNC: truncating a file (even an empty
      one) makes ext4's auto_da_alloc flush all its data inside close(), 1.1-1.4 s for 2.2 GB;
    - token arrays (strings, float32 scores, int32 types) are packed in one go instead of one `_pack_val` call per
      element: 0.17-0.30 s -> 0.02 s for a 32000-token vocabulary."""

    def open_output_file(self, path: Path | None = None) -> None:
        if self.state is not gguf.WriterState.NO_FILE or self.path is None or len(self.tensors) != 1:
            super().open_output_file(path)
            return
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o666)
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)  # not the fresh file this is meant for: start it over anyway
        self.fout = [open(fd, "wb")]  # noqa: SIM115 (GGUFWriter.close closes it)
        self.state = gguf.WriterState.EMPTY

    def _pack_val(self, val, vtype: gguf.GGUFValueType, add_vtype: bool,
                  sub_type: gguf.GGUFValueType | None = None) -> bytes:
        packed = _packed_array(val) if vtype == gguf.GGUFValueType.ARRAY and sub_type is None and \
            self.endianess == gguf.GGUFEndian.LITTLE else None
        if packed is None:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        return (struct.pack("<I", vtype) if add_vtype else b"") + packed


def _packed_array(val) -> bytes | None:
    """A list of only strings (str or bytes), only float or only int (not bool) as GGUFWriter packs it
    (little-endian item type, count, items), or None for anything else, which GGUFWriter then packs (and checks)."""
    if not isinstance(val, list) or not val:
        return None
    kinds = {type(item) for item in val}
    if kinds <= {str, bytes, bytearray}:
        encoded = [item.encode("utf-8") if isinstance(item, str) else item for item in val]
        items = b"".join(struct.pack("<Q", len(e)) + e for e in encoded)
        item_type = gguf.GGUFValueType.STRING
    elif kinds == {float} or kinds == {int}:
        item_type = gguf.GGUFValueType.FLOAT32 if kinds == {float} else gguf.GGUFValueType.INT32
        try:
            with np.errstate(over="raise"):  # struct.pack refuses what does not fit: so does this
                items = np.asarray(val, dtype="<f4" if item_type == gguf.GGUFValueType.FLOAT32 else "<i4").tobytes()
        except (OverflowError, FloatingPointError):
            return None
    else:
        return None
    return struct.pack("<IQ", item_type, len(val)) + items


def _byte_shape(plan: TensorPlan) -> tuple[int, ...]:
    """GGUFWriter takes quantized shapes as bytes per row (it converts back with quant_shape_from_byte_shape)."""
    block, type_size = gguf.GGML_QUANT_SIZES[plan.qtype]
    return (*plan.shape[:-1], plan.shape[-1] // block * type_size)
