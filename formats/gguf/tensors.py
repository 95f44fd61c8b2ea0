"""What goes into the GGUF, tensor by tensor: names, shapes, types, Q/K permutation, and chunked reading.

Nothing is loaded up front: each `TensorPlan` reads its source rows through short-lived memory maps, a chunk of
whole rows (and whole heads, when permuted) at a time, so peak memory stays a few chunks whatever the model size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import gguf
import numpy as np

from ..architectures import ROTATED, Role, TensorSlot
from ..errors import CheckpointError
from ..hf.checkpoint import Checkpoint
from ..hf.tensor_index import TensorInfo
from .dtypes import SOURCE_VIEW, OutType, check_source_dtype, convert_chunk, gguf_nbytes, tensor_type, to_float32
from .layouts import GgufLayout

# source bytes per mapped chunk (whole rows; whole heads when permuting). Measured on 2.2 GB bf16 -> f16: 1 MB
# chunks stay in cache from lookup to write() and give 45 MB peak RSS and the best time; 32 MB gave 160 MB.
CHUNK_BYTES = 1 << 20


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

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
        """The converted tensor as consecutive chunks of output bytes."""
        if self.source is None:
            yield np.asarray(self.values, dtype=np.float32)
            return
        for info in (self.source, *self.stacked):  # stacked experts: one expert's rows after another
            yield from _source_chunks(self, info, chunk_bytes)


def head_permutation(head_dim: int) -> np.ndarray:
    """Row order within one head: HF's halves layout -> llama.cpp's interleaved pairs (LlamaModel.permute)."""
    return np.arange(head_dim).reshape(2, head_dim // 2).T.reshape(-1)


def _source_chunks(plan: TensorPlan, info: TensorInfo, chunk_bytes: int) -> Iterator[np.ndarray]:
    view = SOURCE_VIEW[info.dtype]
    rows = info.shape[0] if info.shape else 1
    row_shape = tuple(info.shape[1:])
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(view).itemsize
    step = max(1, chunk_bytes // max(row_bytes, 1))
    if plan.head_rows:
        step = max(plan.head_rows, step // plan.head_rows * plan.head_rows)
        perm = head_permutation(plan.head_rows)
    column_mean = _column_mean(info, view, step, row_shape, row_bytes) if plan.centre == "columns" else None
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        raw = _map_rows(info, view, r0, r1, row_shape, row_bytes)
        if plan.head_rows:
            block = raw.reshape(-1, plan.head_rows, *row_shape)[:, perm]
            raw = block.reshape(r1 - r0, *row_shape)
        if plan.centre:
            raw = _centred(to_float32(raw, info.dtype), plan.centre, column_mean)
            yield np.ascontiguousarray(convert_chunk(raw, "F32", plan.qtype))
        else:
            yield np.ascontiguousarray(convert_chunk(raw, info.dtype, plan.qtype))
        del raw


def _column_mean(info: TensorInfo, view, step: int, row_shape: tuple[int, ...], row_bytes: int) -> np.ndarray:
    """The mean over rows (output features), accumulated in float64 over a first streaming pass."""
    rows = info.shape[0]
    total = np.zeros(row_shape, np.float64)
    for r0 in range(0, rows, step):
        total += to_float32(_map_rows(info, view, r0, min(rows, r0 + step), row_shape, row_bytes), info.dtype).sum(0)
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


def _map_rows(info: TensorInfo, view, r0: int, r1: int, row_shape: tuple[int, ...], row_bytes: int) -> np.ndarray:
    """Rows r0..r1 of the tensor through a memory map that is dropped with the chunk."""
    shape = (r1 - r0, *row_shape) if info.shape else ()
    try:
        return np.memmap(info.file, dtype=view, mode="r", offset=info.begin + r0 * row_bytes, shape=shape)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read tensor {info.name!r} ({exc})", info.file) from None


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
