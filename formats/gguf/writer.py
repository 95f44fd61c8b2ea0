"""Streaming GGUF writing on top of gguf-py's GGUFWriter: header, metadata and tensor infos first, then each
tensor's data chunk by chunk, so no tensor (let alone the model) is ever held whole in memory.

GGUFWriter.write_tensor_data only needs `.nbytes` and `.tofile(fout)` from what it is given; `StreamedTensor`
provides both and writes converted chunks as they arrive, with gguf-py doing alignment and padding.

Reading, converting and writing overlap: two worker threads convert the next few chunks (memory-mapped reads and
the bf16 -> f16 table lookup both run with the GIL released) while the main thread writes them, strictly in plan
order, so the file is byte for byte that of a serial loop; memory stays a few chunks whatever the model size.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import gguf
import numpy as np
from tqdm import tqdm

from .tensors import TensorPlan

# write() calls of at most 1 MB: measured here, 2.2 GB written in 32 MB calls cost 3-5 s of kernel time, in 1 MB
# calls 0.5 s (a chunk can exceed CHUNK_BYTES when one head or row is larger)
WRITE_BYTES = 1 << 20


# chunks converted ahead of the one being written (each ~1 MB, see tensors.CHUNK_BYTES): enough to keep both
# workers busy across a slow write(), few enough that peak memory stays flat whatever the model size
AHEAD_CHUNKS = 6
# converting threads: the bf16 -> f16 table lookup and the memory-mapped reads release the GIL, so two workers
# convert while the main thread writes
WORKERS = 2


class _ChunkPipeline:
    """Every plan's chunks converted on worker threads a few chunks ahead, handed back strictly in plan order."""

    def __init__(self, plans: Sequence[TensorPlan], workers: int = WORKERS, ahead: int = AHEAD_CHUNKS):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="gguf-convert")
        self._tasks = ((i, task) for i, plan in enumerate(plans) for task in plan.chunk_tasks())
        self._ahead = ahead
        self._pending: deque[tuple[int, Future]] = deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self._ahead:
            nxt = next(self._tasks, None)
            if nxt is None:
                return
            self._pending.append((nxt[0], self._pool.submit(nxt[1])))

    def chunks(self, index: int) -> Iterator[np.ndarray]:
        """Plan number `index`'s converted chunks, in order (plans must be taken in order)."""
        while self._pending and self._pending[0][0] == index:
            chunk = self._pending.popleft()[1].result()
            self._fill()
            yield chunk

    def close(self) -> None:
        """Drop what is still queued (writing failed) and stop the workers."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


class StreamedTensor:
    """Duck-typed stand-in for the ndarray GGUFWriter.write_tensor_data expects."""

    def __init__(self, plan: TensorPlan, progress: tqdm, chunks: Iterator[np.ndarray] | None = None):
        self.plan = plan
        self.nbytes = plan.nbytes
        self._progress = progress
        self._chunks = chunks  # the plan's converted chunks; converted here when None

    def tofile(self, fout) -> None:
        written = 0
        per_output_byte = self.plan.source_nbytes / max(self.nbytes, 1)
        for chunk in self.plan.chunks() if self._chunks is None else self._chunks:
            data = memoryview(chunk).cast("B")
            for start in range(0, len(data), WRITE_BYTES):
                fout.write(data[start:start + WRITE_BYTES])
            written += chunk.nbytes
            self._progress.update(round(chunk.nbytes * per_output_byte))
        if written != self.nbytes:
            raise RuntimeError(f"{self.plan.name}: wrote {written} bytes, planned {self.nbytes}")


def write_gguf(
    path: Path, arch_name: str, add_metadata: Callable[[gguf.GGUFWriter], None], plans: Sequence[TensorPlan],
    progress: bool | None = None,
) -> None:
    """Write a single-file GGUF at `path` (the caller makes it atomic); the progress bar counts source bytes."""
    writer = gguf.GGUFWriter(path, arch_name)
    add_metadata(writer)
    for plan in plans:
        writer.add_tensor_info(plan.name, _byte_shape(plan), np.dtype(np.uint8), plan.nbytes, raw_dtype=plan.qtype)
    total = sum(p.source_nbytes for p in plans)
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="hf-to-gguf",
               disable=None if progress is None else not progress, file=sys.stderr)
    pipeline = None
    try:
        _open_without_truncating(writer, Path(path))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        pipeline = _ChunkPipeline(plans)
        for i, plan in enumerate(plans):
            writer.write_tensor_data(StreamedTensor(plan, bar, pipeline.chunks(i)))  # type: ignore[arg-type]
        writer.flush()
    finally:
        if pipeline is not None:
            pipeline.close()
        bar.close()
        writer.close()


def _open_without_truncating(writer: gguf.GGUFWriter, path: Path) -> None:
    """Open the output for GGUFWriter ourselves, truncating only a non-empty file. Measured: GGUFWriter's
    open(path, "wb") truncates the empty temp file atomic_output_file made, and ext4 (auto_da_alloc) then treats
    the file as replaced-by-truncate and starts writing all 2.2 GB back inside close(): +1.1 s, which `cat` into a
    new file does not pay. The data is no less durable: nothing here fsyncs either way."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
        fout = os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise
    writer.fout = [fout]  # what GGUFWriter.open_output_file sets for one unsplit file
    writer.state = gguf.gguf_writer.WriterState.EMPTY


def _byte_shape(plan: TensorPlan) -> tuple[int, ...]:
    """GGUFWriter takes quantized shapes as bytes per row (it converts back with quant_shape_from_byte_shape)."""
    block, type_size = gguf.GGML_QUANT_SIZES[plan.qtype]
    return (*plan.shape[:-1], plan.shape[-1] // block * type_size)
