"""Streaming GGUF writing on top of gguf-py's GGUFWriter: header, metadata and tensor infos through it, then the
tensor data chunk by chunk, so no tensor (let alone the model) is ever held whole in memory.

Every chunk's place in the file is known before it is converted (the tensor infos fix each tensor's offset, and a
chunk's size follows from its rows), so WORKERS forked processes each take every WORKERS-th chunk, read it, convert
it in their own reused buffers and `pwrite` it at its offset: no ordering and no hand-over between them, and the
bytes are written while still in the converting core's cache. Processes, not threads: numpy releases the GIL in
each of a chunk's ~15 calls, and two threads handing it back and forth took 556 us per 1 MB chunk each against
465 us for two processes (one alone: 425 us).
The file's blocks are allocated up front (fallocate), which saves ext4 its per-block bookkeeping in each write.
Measured on 2.2 GB bf16 -> f16 (bench/bench_hf_to_gguf.py on a shared 2-core machine; docs/gguf.md has the
details): 10.4 s serial with the table lookup at first, 2.2-2.6 s with two threads, 1.8-2.1 s now, against
1.2-1.5 s for a plain `cat` of the shards.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import pickle
import select
import signal
import struct
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterable, Iterator, NoReturn, Sequence

import gguf
import numpy as np

from . import tensors
from .tensors import Chunk, TensorPlan

# write() calls of at most 1 MB: measured here, 2.2 GB written in 32 MB calls cost 3-5 s of kernel time, in 1 MB
# calls 0.5 s (a chunk can exceed CHUNK_BYTES when one head or row is larger)
WRITE_BYTES = 1 << 20
WORKERS = 2  # the benchmark machine has 2 cores; the parent process only waits while the workers run
STOP_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}
PROGRESS_SECONDS = 0.2  # how often the parent passes the workers' progress to the bar
FALLOC_FL_KEEP_SIZE = 1  # linux/falloc.h


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
        _preallocate(fd, end)
        # listed before the fork: a centred tensor's column mean (a pass over the whole tensor) is then computed
        # once, here, not by every worker walking the chunks
        run_workers(fd, list(_placed_chunks(plans, start, writer.data_alignment)), bar)
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


def run_workers(fd: int, placed: Iterable[tuple[Chunk, int]], progress, workers: int | None = None) -> None:
    """Convert and pwrite every (chunk, offset) of `placed` in `workers` (default WORKERS) forked processes, worker
    k taking chunks k, k + workers, ... (chunks are ~equal, so the shares are too); the progress bar counts the
    source bytes they report.

    The first exception in a worker (a CheckpointError from a bad shard, ENOSPC) is raised here, and so is an
    interrupt here (Ctrl-C, SIGTERM); either way the other workers are killed first, so none writes after the
    caller removes the output."""
    workers = workers or WORKERS
    done = np.frombuffer(mmap.mmap(-1, 8 * workers), np.int64)  # shared memory: source bytes each worker wrote
    token = os.pipe()  # one pwrite at a time: a byte the workers pass on; the kernel would spin on the inode lock
    os.write(token[1], b".")
    running: dict[int, int] = {}  # read end of each worker's error pipe -> its pid
    try:
        _fork(workers, running, lambda k: _work(k, workers, fd, placed, done, token))
        _wait(running, done, progress)
    finally:
        for pid in running.values():
            os.kill(pid, signal.SIGKILL)
        for pid in running.values():
            os.waitpid(pid, 0)
        for end in (*token, *running):
            os.close(end)


def _work(k: int, workers: int, fd: int, placed: Iterable[tuple[Chunk, int]], done: np.ndarray,
          token: tuple[int, int]) -> None:
    """Worker k's chunks; it stops early if the parent is gone (SIGKILL: nobody would kill it)."""
    parent = os.getppid()
    buffers = tensors.ChunkBuffers.of_size(tensors.CHUNK_BYTES)
    for i, (chunk, offset) in enumerate(placed):
        if i % workers != k:
            continue
        if os.getppid() != parent:
            return
        data = chunk.convert(buffers, offset)
        os.read(token[0], 1)
        try:
            _pwrite_all(fd, chunk, data, offset)
        finally:
            os.write(token[1], b".")
        done[k] += chunk.source_nbytes


def _fork(workers: int, running: dict[int, int], work: Callable[[int], None]) -> None:
    """Start `work(k)` in a child process for each k, adding each to `running` as soon as it exists.

    The children ignore the stop signals (Ctrl-C reaches the whole process group): the parent handles them and
    kills the children. The signals stay blocked until each child ignores them, so none can run the parent's
    handlers in a child. The parent's objects are frozen out of the garbage collector meanwhile: a child never
    touches their pages (copy-on-write)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    gc.freeze()
    try:
        for k in range(workers):
            read_end, write_end = os.pipe()
            try:
                pid = os.fork()
            except BaseException:
                os.close(read_end)
                os.close(write_end)
                raise
            if pid == 0:
                _child(work, k, write_end)
            os.close(write_end)  # the child's is its only one: the parent reads an end of file when it exits
            running[read_end] = pid
    finally:
        gc.unfreeze()
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _child(work: Callable[[int], None], k: int, error_pipe: int) -> NoReturn:
    """A worker process: runs work(k) and exits, never returning into the parent's code; an exception is sent
    (pickled) through `error_pipe`, which the parent reads."""
    status = 1
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        work(k)
        status = 0
    except BaseException as exc:  # noqa: BLE001 (handed to the parent, raised there)
        _send_error(error_pipe, exc)
    finally:
        os._exit(status)


def _send_error(pipe: int, exc: BaseException) -> None:
    """The exception and its traceback's text (an exception that does not pickle: its type and message)."""
    where = traceback.format_exc()
    try:
        data = pickle.dumps((exc, where))
    except Exception:  # noqa: BLE001
        data = pickle.dumps((RuntimeError(f"{type(exc).__name__}: {exc}"), where))
    view = memoryview(data)
    while view:
        view = view[os.write(pipe, view):]


def _wait(running: dict[int, int], done: np.ndarray, progress) -> None:
    """Until every worker has ended: pass their progress on, and raise the first error one reports."""
    received: dict[int, list[bytes]] = {end: [] for end in running}
    shown = 0
    while running:
        ready, _, _ = select.select(list(running), [], [], PROGRESS_SECONDS)
        total = int(done.sum())
        progress.update(total - shown)
        shown = total
        for end in ready:
            data = os.read(end, 1 << 16)
            if data:
                received[end].append(data)
                continue
            _, status = os.waitpid(running.pop(end), 0)
            os.close(end)
            if status:
                raise _worker_error(b"".join(received[end]), status)


def _worker_error(report: bytes, status: int) -> BaseException:
    """The exception a worker sent, its traceback as the cause (--debug shows it); or, when it sent none (killed),
    an error saying how it ended."""
    try:
        exc, where = pickle.loads(report)  # written by our own forked child
    except Exception:  # noqa: BLE001 (nothing sent, or cut short)
        return RuntimeError(f"a GGUF writer process ended with status {os.waitstatus_to_exitcode(status)}")
    exc.__cause__ = WorkerTraceback(where)
    return exc


class WorkerTraceback(Exception):
    """Where a worker process raised the exception that the parent raises again."""


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


def _preallocate(fd: int, size: int) -> None:
    """Allocate the file's blocks before the data is written, its size unchanged (Linux fallocate with
    FALLOC_FL_KEEP_SIZE), where the filesystem can: ext4 then skips its delayed-allocation bookkeeping in every
    write (2.1 GB written in 0.5 s instead of 0.7-1.4 s here). Not os.posix_fallocate: where a filesystem lacks
    fallocate, glibc emulates it by writing to every block. A refusal (unsupported, no space) is left to the
    writes to meet."""
    fallocate = getattr(ctypes.CDLL(None), "fallocate", None)  # Linux's libc has it
    if fallocate is not None:
        fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, size)


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
