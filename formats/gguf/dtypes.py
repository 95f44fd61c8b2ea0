"""Output types of `hf-to-gguf` and chunk-wise dtype conversion (numpy only, no torch: fast start, small RSS).

bf16 -> f16 is bit arithmetic where f16 holds the value exactly, and a 65536-entry lookup table elsewhere (bf16 ->
f32 is exact, f32 -> f16 rounds to nearest even): the same bits as llama.cpp's converter for all 65536 inputs.
bf16 and q8_0 rounding come from gguf-py's reference quantizers (`gguf.quants`). The K-quants people ship
(q4_k_m, q5_k_m, q6_k) and q4_0 come from llama.cpp's own quantizer (formats/gguf/quantize.py), run on a lossless
intermediate GGUF in the source's float type; `auto` keeps the source's 16-bit type as llama.cpp's converter does.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

import gguf
import numpy as np

from ..errors import CheckpointError
from ..hf.tensor_index import bf16_bits_to_float32

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class OutType:
    """One `--outtype`: the type of 2-D weights and the GGUF file type. 1-D tensors always stay F32.

    `llama_ftype` names the llama_cpp constant (e.g. LLAMA_FTYPE_MOSTLY_Q4_K_M) of a type only llama.cpp's
    quantizer makes; `weight_type` is then its main block type (llama.cpp's mixture picks others per tensor)."""

    name: str
    weight_type: gguf.GGMLQuantizationType
    file_type: gguf.LlamaFileType
    llama_ftype: str | None = None

    @property
    def needs_quantizer(self) -> bool:
        return self.llama_ftype is not None


def _quantizer_type(name: str, weight_type: gguf.GGMLQuantizationType) -> OutType:
    """An outtype produced by llama.cpp's quantizer; gguf.LlamaFileType and llama_cpp share the member name."""
    file_type = gguf.LlamaFileType[f"MOSTLY_{name.upper()}"]
    return OutType(name, weight_type, file_type, f"LLAMA_FTYPE_{file_type.name}")


OUTTYPES: dict[str, OutType] = {
    o.name: o
    for o in (
        OutType("f32", Q.F32, gguf.LlamaFileType.ALL_F32),
        OutType("f16", Q.F16, gguf.LlamaFileType.MOSTLY_F16),
        OutType("bf16", Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        OutType("q8_0", Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
        _quantizer_type("q4_0", Q.Q4_0),
        _quantizer_type("q4_k_m", Q.Q4_K),
        _quantizer_type("q5_k_m", Q.Q5_K),
        _quantizer_type("q6_k", Q.Q6_K),
    )
}
AUTO = "auto"  # keep the source's float type, as llama.cpp's convert_hf_to_gguf.py --outtype auto
OUTTYPE_CHOICES = (*OUTTYPES, AUTO)
# a uniform source dtype -> the outtype that holds it exactly (the quantizer's intermediate)
LOSSLESS_OUTTYPE = {"F32": "f32", "F16": "f16", "BF16": "bf16"}


def auto_outtype(matrix_dtypes: Iterable[str]) -> OutType:
    """llama.cpp's converter rule (conversion/base.py, ftype GUESSED): the first 2-D tensor stored as BF16 or F16
    decides (bf16 or f16); without one (an all-F32 checkpoint) the output is f16. `matrix_dtypes`: the
    safetensors dtypes of the 2-D tensors in file order."""
    for dtype in matrix_dtypes:
        if dtype == "BF16":
            return OUTTYPES["bf16"]
        if dtype == "F16":
            return OUTTYPES["f16"]
    return OUTTYPES["f16"]


def intermediate_outtype(matrix_dtypes: Iterable[str]) -> OutType:
    """The float type of the GGUF handed to llama.cpp's quantizer: the source's own when all 2-D tensors share
    it (no rounding before quantization), else f32."""
    kinds = set(matrix_dtypes)
    only = next(iter(kinds)) if len(kinds) == 1 else None
    return OUTTYPES[LOSSLESS_OUTTYPE.get(only, "f32")]

# safetensors dtype -> how its raw bytes are viewed (bf16 as uint16 bit patterns)
SOURCE_VIEW = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
RAW_MATCH = {("F32", Q.F32), ("F16", Q.F16), ("BF16", Q.BF16)}  # bytes copied unchanged


def tensor_type(outtype: OutType, shape: tuple[int, ...]) -> gguf.GGMLQuantizationType:
    """1-D tensors F32; q8_0 needs rows divisible by its block size, else F16 (as llama.cpp's converter)."""
    if len(shape) <= 1:
        return Q.F32
    if outtype.weight_type == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return outtype.weight_type


def gguf_nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    """Bytes of a tensor of `shape` (row-major, last dim innermost) stored as `qtype`."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape[:-1]) * (shape[-1] // block) * type_size  # not np.prod: ~10 us, several times a chunk


def check_source_dtype(dtype: str, name: str) -> None:
    if dtype not in SOURCE_VIEW:
        raise CheckpointError(f"tensor {name!r} has dtype {dtype}; GGUF conversion reads F32, F16 and BF16 only")


@functools.lru_cache(maxsize=1)
def _bf16_to_f16_table() -> np.ndarray:
    every_bf16 = bf16_bits_to_float32(np.arange(65536, dtype=np.uint16))
    with np.errstate(over="ignore", invalid="ignore"):
        return every_bf16.astype(np.float16)


def to_float32(raw: np.ndarray, src_dtype: str) -> np.ndarray:
    """A source chunk as float32 (exact for every source dtype)."""
    if src_dtype == "BF16":
        return bf16_bits_to_float32(raw)
    return np.asarray(raw, dtype=np.float32)


# bf16 bits s|eeeeeeee|mmmmmmm with 113 <= e <= 142 are normal f16 numbers, exactly s|(e-112):5|mmmmmmm000; the rest
# (|x| < 2**-14: f16 subnormals and zero, which round; |x| >= 2**16: inf; nan) come from the table. With a = |bits|
# = e<<7 | m: f16 = sign + 8a - (112<<10) = bits + 7a + 0x4000 (mod 2**16). t = a + 0x3880 moves that range to
# 0x7100..0x7FFF, the top of int16 (one signed compare finds the rest), and bits + 7t + 0xB480 is the same f16
# (7 * 0x3880 = 0x8B80 mod 2**16).
_MAGNITUDE = np.uint16(0x7FFF)
_RANGE_SHIFT = np.uint16(0x3880)
_RANGE_START = np.int16(0x7100)
_SEVEN = np.uint16(7)
_REBIAS = np.uint16(0xB480)
_EIGHT = np.arange(8)
_scratch = threading.local()  # per thread, reused: no allocation (and page faults) per chunk


def bf16_to_f16_bits(raw: np.ndarray, out: np.ndarray) -> None:
    """Write the f16 bits of the bf16 bits `raw` into `out` (uint16, same shape, C-contiguous); `raw` may be a
    strided view (permuted heads). Six in-place uint16 passes and a scan of the out-of-range mask: 1.1-1.4 G elem/s
    on one core with a 1 MB chunk in cache (2026-11-27, numpy 2.4.6), against 0.4-0.7 G/s for
    `np.take(table, raw, out=)` and 0.4 G/s for `table[raw]`. Multiply and add, not shifts: numpy's uint16 shifts
    ran at half their speed. Not split into L2-sized blocks: 64-128 Ki-element blocks made the whole conversion
    slower (1.9-2.4 s vs 1.7-1.9 s), each numpy call costing ~1-2 us."""
    mask, groups_hit = _scratch_buffers(raw.size)
    mask = mask[:raw.size].reshape(raw.shape)
    np.bitwise_and(raw, _MAGNITUDE, out=out)  # all in place in `out`: less memory traffic than a temporary
    np.add(out, _RANGE_SHIFT, out=out)
    np.less(out.view(np.int16), _RANGE_START, out=mask)  # outside the exact range (int16: 1.4x uint16's speed)
    np.multiply(out, _SEVEN, out=out)
    np.add(out, raw, out=out)
    np.add(out, _REBIAS, out=out)
    index = _set_positions(mask.reshape(-1), groups_hit)
    if index.size:
        # a strided `raw` (permuted heads) through .flat: reshape would copy the whole chunk; out is contiguous
        picked = raw.reshape(-1)[index] if raw.flags.c_contiguous else raw.flat[index]
        out.reshape(-1)[index] = np.take(_bf16_to_f16_table().view(np.uint16), picked)


def _set_positions(mask: np.ndarray, groups_hit: np.ndarray) -> np.ndarray:
    """The positions of the Trues in `mask` (~0.25% of random normal bf16 weights are f16 subnormals), found through
    its 8-byte words: `groups_hit` is scratch of mask.size // 8 bools. Measured per 512 Ki elements: np.flatnonzero
    on the bools 180 us (as long as the arithmetic), on the words 260 us (numpy's generic nonzero), on `words != 0`
    55 us; then only the ~2% of words with a True are looked into."""
    whole = mask.size - mask.size % 8
    groups = np.flatnonzero(np.not_equal(mask[:whole].view(np.uint64), 0, out=groups_hit[:whole // 8]))
    within = np.flatnonzero(mask[:whole].reshape(-1, 8)[groups])
    index = groups[within >> 3] * 8 + (within & 7)
    if whole < mask.size:
        index = np.concatenate([index, np.flatnonzero(mask[whole:]) + whole])
    return index


def _scratch_buffers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's (mask, groups_hit) scratch, grown when a chunk is larger than any before."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None or buffers[0].size < size:
        buffers = _scratch.buffers = (np.empty(size, np.bool_), np.empty(size // 8, np.bool_))
    return buffers


def _to_f16(raw: np.ndarray, src_dtype: str) -> np.ndarray:
    if src_dtype == "BF16":
        bits = np.empty(raw.shape, np.uint16)
        bf16_to_f16_bits(raw, bits)
        return bits
    with np.errstate(over="ignore"):
        return raw.astype(np.float16)


def _quantized(qtype: gguf.GGMLQuantizationType) -> Callable[[np.ndarray, str], np.ndarray]:
    def convert(raw: np.ndarray, src_dtype: str) -> np.ndarray:
        return gguf.quants.quantize(to_float32(raw, src_dtype), qtype)

    return convert


CONVERTERS: dict[gguf.GGMLQuantizationType, Callable[[np.ndarray, str], np.ndarray]] = {
    Q.F32: to_float32,
    Q.F16: _to_f16,
    Q.BF16: _quantized(Q.BF16),
    Q.Q8_0: _quantized(Q.Q8_0),
}


def convert_chunk(raw: np.ndarray, src_dtype: str, qtype: gguf.GGMLQuantizationType,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Convert a chunk of whole rows from the source dtype to the GGUF type (raw bytes when they already match).
    `out`, where `fills_buffer` says so: a uint16 array of raw's shape to write into instead of allocating."""
    if (src_dtype, qtype) in RAW_MATCH:
        return raw
    if out is not None and fills_buffer(src_dtype, qtype):
        bf16_to_f16_bits(raw, out)
        return out
    return CONVERTERS[qtype](raw, src_dtype)


def fills_buffer(src_dtype: str, qtype: gguf.GGMLQuantizationType) -> bool:
    """Whether convert_chunk can write into a caller's reused buffer: the hot path, bf16 -> f16 (the other types
    allocate per chunk, as before the pipeline)."""
    return src_dtype == "BF16" and qtype == Q.F16
