"""Output types of `hf-to-gguf` and chunk-wise dtype conversion (numpy only, no torch: fast start, small RSS).

bf16 -> f16 goes through a 65536-entry lookup table (bf16 -> f32 is exact, f32 -> f16 rounds to nearest even):
the same bits as llama.cpp's converter, several times faster than a float32 round trip.
bf16 and q8_0 rounding come from gguf-py's reference quantizers (`gguf.quants`). The K-quants people ship
(q4_k_m, q5_k_m, q6_k) and q4_0 come from llama.cpp's own quantizer (formats/gguf/quantize.py), run on a lossless
intermediate GGUF in the source's float type; `auto` keeps the source's 16-bit type as llama.cpp's converter does.
"""

from __future__ import annotations

import functools
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
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    return rows * (shape[-1] // block) * type_size


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


def _to_f16(raw: np.ndarray, src_dtype: str) -> np.ndarray:
    if src_dtype == "BF16":
        return _bf16_to_f16_table()[raw]
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


def convert_chunk(raw: np.ndarray, src_dtype: str, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """Convert a chunk of whole rows from the source dtype to the GGUF type (raw bytes when they already match)."""
    if (src_dtype, qtype) in RAW_MATCH:
        return raw
    return CONVERTERS[qtype](raw, src_dtype)
