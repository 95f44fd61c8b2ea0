"""What goes into the GGUF, tensor by tensor: names, shapes, types, Q/K permutation, and chunked reading.

Nothing is loaded up front: each `TensorPlan` splits into `Chunk`s of whole rows (and whole heads, when permuted),
each read into a reused buffer when it is converted, so peak memory stays a few chunks whatever the model size.
Chunks are independent: the writer converts several at once in worker processes (formats/gguf/writer.py).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Iterator

import gguf
import numpy as np

from ..architectures import ROTATED, Role, TensorSlot
from ..errors import CheckpointError
from ..hf.checkpoint import Checkpoint
from ..hf.tensor_index import TensorInfo
from .dtypes import (
    SOURCE_VIEW,
    OutType,
    check_source_dtype,
    convert_chunk,
    fills_buffer,
    gguf_nbytes,
    tensor_type,
    to_float32,
)
from .layouts import GgufLayout

# source bytes per chunk (whole rows; whole heads when permuting). Measured on 2.2 GB bf16 -> f16: 1 MB chunks stay in
# cache from reading to write() and give ~50 MB peak RSS and the best time; 32 MB gave 160 MB. The conversion alone with
# two workers (2026-11-27): 256 KB chunks 3.4-3.9 s, 512 KB 2.5 s, 1 MB 1.8-1.9 s, 2 MB no better, 4 MB 2.0-2.4 s.
CHUNK_BYTES = 1 << 20
# The kernel's copies between the page cache and a buffer (read and write) ran 8-10x slower here (AMD EPYC, 2 vs
# 19 GB/s) when the buffer's address was 1-31 bytes past the file offset within a page: each chunk is read and
# written at the same position within a page as its file offset, so every copy runs page to page.
PAGE = 4096


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: either rows read from a source tensor, or constant F32 values (factor sets)."""

    name: str
    shape: tuple[int, ...]  # row-major (numpy/HF order); GGUF stores it reversed
    qtype: gguf.GGMLQuantizationType
    source: TensorInfo | None = None
    head_rows: int = 0  # > 0: permute rows within each block of this many rows (one head) as llama.cpp expects
    values: tuple[float, ...] = ()
    # more sources stacked after `source` along a new leading axis (a MoE layer's experts -> one 3-D tensor)
    stacked: tuple[TensorInfo, ...] = ()
    # "" as stored; "rows": each row minus its mean; "columns": each column minus its mean over the rows
    # (see CENTRED_ROLES: how a LayerNorm model runs exactly in a graph that only has RMSNorm)
    centre: str = ""

    @property
    def nbytes(self) -> int:
        return gguf_nbytes(self.shape, self.qtype)

    @property
    def source_nbytes(self) -> int:
        if self.source is None:
            return 4 * len(self.values)
        return sum(info.end - info.begin for info in (self.source, *self.stacked))

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
        """The tensor as consecutive chunks of output, in file order; nothing is read until one is converted
        (except for column centring, whose mean takes a first pass over the tensor here)."""
        if self.source is None:
            yield Chunk(self)
            return
        for info in (self.source, *self.stacked):  # stacked experts: one expert's rows after another
            yield from _source_chunks(self, info, chunk_bytes)


@dataclass(frozen=True, eq=False)
class Chunk:
    """Rows r0..r1 of one source tensor of a plan (or a factor set's values), read and converted on demand, by
    whichever worker process of the writer takes it."""

    plan: TensorPlan
    info: TensorInfo | None = None
    r0: int = 0
    r1: int = 0
    column_mean: np.ndarray | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        """Bytes of the converted chunk, known before converting: the writer places chunks by it."""
        if self.info is None:
            return self.plan.nbytes
        return gguf_nbytes((self.r1 - self.r0, *self.info.shape[1:]), self.plan.qtype)

    @property
    def source_nbytes(self) -> int:
        if self.info is None:
            return self.plan.source_nbytes
        return (self.r1 - self.r0) * _row_layout(self.info)[2]

    def convert(self, buffers: ChunkBuffers | None = None, offset: int = 0) -> np.ndarray:
        """The chunk's output bytes as a contiguous array, read and (bf16 -> f16) converted into `buffers` when
        given and large enough: the result may be a view of them, valid until they are used again, placed at the
        position within a page of `offset`, where it goes in the output file (see PAGE)."""
        plan, info = self.plan, self.info
        if info is None:
            return np.asarray(plan.values, dtype=np.float32)
        view, row_shape, row_bytes = _row_layout(info)
        into = buffers and buffers.read[(info.begin + self.r0 * row_bytes) % PAGE:]
        raw = _read_rows(info, view, self.r0, self.r1, row_shape, row_bytes, into)
        if plan.head_rows:
            raw = _interleaved_heads(raw, plan.head_rows)
        if not plan.centre and fills_buffer(info.dtype, plan.qtype):
            out = _buffer_view(buffers and buffers.out[offset % PAGE:], raw.shape)
            return convert_chunk(raw, info.dtype, plan.qtype, out)
        raw = raw.reshape(self.r1 - self.r0, *row_shape) if info.shape else raw  # permuted: a copy, as before
        if plan.centre:
            return np.ascontiguousarray(convert_chunk(_centred(to_float32(raw, info.dtype), plan.centre,
                                                               self.column_mean), "F32", plan.qtype))
        return np.ascontiguousarray(convert_chunk(raw, info.dtype, plan.qtype))


@dataclass(frozen=True)
class ChunkBuffers:
    """One worker's reused memory: the source bytes of its chunk and their conversion (a fresh 1 MB array per
    chunk would fault its pages in again every time). Both start at a page boundary and are a page longer than a
    chunk, which starts at its file offset modulo PAGE."""

    read: np.ndarray
    out: np.ndarray

    @classmethod
    def of_size(cls, nbytes: int) -> ChunkBuffers:
        return cls(_page_aligned(nbytes + PAGE), _page_aligned(nbytes + PAGE))


def _page_aligned(nbytes: int) -> np.ndarray:
    base = np.empty(nbytes + PAGE, np.uint8)
    return base[-base.ctypes.data % PAGE:][:nbytes]


def _interleaved_heads(raw: np.ndarray, head_rows: int) -> np.ndarray:
    """Rows in llama.cpp's order within each head (LlamaModel.permute: row j of the first half, then row j of the
    second) as a strided view, (rows, ...) -> (heads, head_rows / 2, 2, ...): no copy before the conversion."""
    return raw.reshape(-1, 2, head_rows // 2, *raw.shape[1:]).swapaxes(1, 2)


def _buffer_view(buffer: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """`buffer` as uint16 of `shape` (16-bit output), or None when there is none or it is too small (a chunk can
    exceed CHUNK_BYTES when one row or head is larger)."""
    count = math.prod(shape)
    if buffer is None or buffer.nbytes < 2 * count:
        return None
    return buffer[:2 * count].view(np.uint16).reshape(shape)


def _row_layout(info: TensorInfo) -> tuple[type, tuple[int, ...], int]:
    """(numpy view of the source dtype, shape of one row, bytes per row)."""
    return _layout(info.dtype, tuple(info.shape[1:]))


@functools.lru_cache(maxsize=256)
def _layout(dtype: str, row_shape: tuple[int, ...]) -> tuple[type, tuple[int, ...], int]:
    view = SOURCE_VIEW[dtype]  # cached: np.prod alone costs ~10 us, per chunk in the workers
    return view, row_shape, math.prod(row_shape) * np.dtype(view).itemsize


def _source_chunks(plan: TensorPlan, info: TensorInfo, chunk_bytes: int) -> Iterator[Chunk]:
    view, row_shape, row_bytes = _row_layout(info)
    rows = info.shape[0] if info.shape else 1
    step = max(1, chunk_bytes // max(row_bytes, 1))
    if plan.head_rows:
        step = max(plan.head_rows, step // plan.head_rows * plan.head_rows)
    column_mean = _column_mean(info, view, step, row_shape, row_bytes) if plan.centre == "columns" else None
    for r0 in range(0, rows, step):
        yield Chunk(plan, info, r0, min(rows, r0 + step), column_mean)


def _column_mean(info: TensorInfo, view, step: int, row_shape: tuple[int, ...], row_bytes: int) -> np.ndarray:
    """The mean over rows (output features), accumulated in float64 over a first streaming pass."""
    rows = info.shape[0]
    total = np.zeros(row_shape, np.float64)
    for r0 in range(0, rows, step):
        total += to_float32(_read_rows(info, view, r0, min(rows, r0 + step), row_shape, row_bytes), info.dtype).sum(0)
    return total / rows


def _centred(chunk: np.ndarray, how: str, column_mean: np.ndarray | None) -> np.ndarray:
    if how == "rows":
        return (chunk - chunk.astype(np.float64).mean(-1, keepdims=True)).astype(np.float32)
    return (chunk - column_mean).astype(np.float32)


# A LayerNorm architecture written for a llama.cpp graph that normalises with RMSNorm (phimoe): every write into the
# residual stream is centred (token embeddings per row; attention output and expert down projections, and their
# biases, over their output features), so the stream has zero mean and RMSNorm(x)*w+b equals LayerNorm(x)*w+b
# exactly. Only LayerNorms read the stream, and each removes the mean anyway, so the logits are unchanged.
CENTRED_ROLES = {Role.EMBED: "rows", Role.O: "columns", Role.EXPERT_DOWN: "columns"}


def _centring(slot: TensorSlot, centre_residual: bool) -> str:
    if not centre_residual or slot.role not in CENTRED_ROLES:
        return ""
    return "columns" if slot.is_bias else CENTRED_ROLES[slot.role]


def _read_rows(info: TensorInfo, view, r0: int, r1: int, row_shape: tuple[int, ...], row_bytes: int,
               into: np.ndarray | None = None) -> np.ndarray:
    """Rows r0..r1 of the tensor, read into the uint8 buffer `into` when it is large enough (the result is then a
    view of it). Read, not memory-mapped: converting 2.2 GB bf16 -> f16 with two workers took 1.6-2.0 s through
    per-chunk maps, 1.6-1.8 s read (page faults and unmaps cost more than the copy, which also leaves the chunk in
    cache for the conversion), 1.3-1.7 s with os.preadv on a plain descriptor instead of a file's seek + readinto."""
    shape = (r1 - r0, *row_shape) if info.shape else ()
    length = (r1 - r0) * row_bytes
    data = into[:length] if into is not None and into.nbytes >= length else np.empty(length, np.uint8)
    try:
        fd = os.open(info.file, os.O_RDONLY)
        try:
            done, start = 0, info.begin + r0 * row_bytes
            while done < length:
                got = os.preadv(fd, [data[done:]], start + done)
                if not got:
                    raise OSError("the file ends inside the tensor")
                done += got
        finally:
            os.close(fd)
    except OSError as exc:
        raise CheckpointError(f"cannot read tensor {info.name!r} ({exc})", info.file) from None
    return data.view(view).reshape(shape)


def plan_weight_tensors(checkpoint: Checkpoint, layout: GgufLayout, outtype: OutType) -> list[TensorPlan]:
    """Map every HF tensor to its GGUF name and type; the architecture description says which rows are Q/K
    (permuted for llama.cpp's pair rotation) and which head a tied checkpoint drops. Unknown tensors are an error."""
    geo = checkpoint.geometry
    name_map = gguf.get_tensor_name_map(layout.arch, geo.num_layers)
    slots = checkpoint.slots()
    centre_residual = checkpoint.arch.norm == "layer" and layout.rms_norm_only
    if centre_residual and geo.tie_word_embeddings:
        raise CheckpointError(f"{checkpoint.arch.hf_class}: a tied head cannot share centred embeddings "
                              f"(llama.cpp's {layout.name} graph has only RMSNorm)", checkpoint.folder)
    plans = []
    for hf_name, info in checkpoint.tensors.items():
        slot = slots.get(hf_name)
        if slot is None:
            continue  # a buffer no runtime reads (checked when the checkpoint was opened)
        if slot.role is Role.LM_HEAD and geo.tie_word_embeddings and not slot.is_bias:
            continue  # tied: llama.cpp reuses token_embd
        if slot.expert is not None:
            if slot.expert == 0:  # experts 1.. are stacked behind expert 0 in one 3-D tensor
                plans.append(_stacked_experts(checkpoint, slot, info, name_map, outtype, centre_residual))
            continue
        new_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise CheckpointError(f"tensor {hf_name!r} has no {layout.name} GGUF name", info.file)
        check_source_dtype(info.dtype, hf_name)
        head_rows = geo.head_dim if layout.permute_qk and slot.role in ROTATED else 0
        plans.append(TensorPlan(new_name, info.shape, tensor_type(outtype, info.shape), info, head_rows,
                                centre=_centring(slot, centre_residual)))
    return plans


def _stacked_experts(checkpoint: Checkpoint, first: TensorSlot, info: TensorInfo, name_map, outtype: OutType,
                     centre_residual: bool) -> TensorPlan:
    """One role of every expert in a layer as llama.cpp's 3-D `ffn_{gate,up,down}_exps` [n_expert, out, in]; the
    name comes from gguf-py's map for the un-numbered form (`...experts.w1`) llama.cpp's converter also stacks."""
    geo = checkpoint.geometry
    names = [first.name.replace(f".experts.{first.expert}.", f".experts.{e}.") for e in range(geo.num_experts)]
    missing = [n for n in names if n not in checkpoint.tensors]
    if missing:
        raise CheckpointError(f"tensor {missing[0]!r} is missing from the checkpoint", checkpoint.folder)
    infos = [checkpoint.tensors[n] for n in names]
    for n, other in zip(names, infos):
        check_source_dtype(other.dtype, n)
        if other.dtype != info.dtype:
            raise CheckpointError(f"experts of {first.name!r} mix dtypes ({info.dtype}, {other.dtype})", other.file)
    plain = first.name.replace(f".experts.{first.expert}.", ".experts.")
    new_name = name_map.get_name(plain, try_suffixes=(".weight",))
    if new_name is None:
        raise CheckpointError(f"tensor {first.name!r} has no stacked-expert GGUF name", info.file)
    shape = (geo.num_experts, *info.shape)
    return TensorPlan(new_name, shape, tensor_type(outtype, info.shape), infos[0], stacked=tuple(infos[1:]),
                      centre=_centring(first, centre_residual))


def factor_tensor_plans(layout: GgufLayout, factor_sets: str, long: tuple[float, ...],
                        short: tuple[float, ...]) -> list[TensorPlan]:
    """The F32 factor tensors: the long/short pair, or one set (rope_freqs, or both phi3 tensors)."""
    T = gguf.MODEL_TENSOR
    half = (len(long),)

    def plan(tensor: gguf.MODEL_TENSOR, values: tuple[float, ...]) -> TensorPlan:
        return TensorPlan(gguf.TENSOR_NAMES[tensor] + ".weight", half, gguf.GGMLQuantizationType.F32, values=values)

    if factor_sets == "pair":
        return [plan(T.ROPE_FACTORS_LONG, long), plan(T.ROPE_FACTORS_SHORT, short)]
    chosen = long if factor_sets == "long" else short
    if layout.single_set_as_freqs:
        return [plan(T.ROPE_FREQS, chosen)]
    return [plan(T.ROPE_FACTORS_LONG, chosen), plan(T.ROPE_FACTORS_SHORT, chosen)]
