"""The export-onnx pipeline: a LongRoPE checkpoint -> one ONNX decoder graph that switches factor sets itself.

The graph is built from the safetensors weights with onnx.helper (formats/onnx_decoder.py): no tracing, so the
result does not depend on an example input or on the installed transformers, and no eager model exists that a
later check could accidentally reuse.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..formats.atomic_output import atomic_output_dir, check_output_path
from ..formats.errors import LongRopeError
from ..formats.factor_set import FactorSet
from ..formats.hf.checkpoint import Checkpoint, open_checkpoint
from ..formats.hf.tensor_index import COMPANION_FILES, DTYPE_BYTES
from ..formats.onnx import names as N
from ..formats.onnx.attention_forms import ATTENTION_FORMS, DEFAULT_ATTENTION
from ..formats.onnx.decoder import (
    DEFAULT_OPSET,
    EXPORT_DTYPES,
    GRAPH_PRECISION,
    INT4,
    MIN_OPSET,
    DecoderGraphOptions,
    build_decoder_graph,
)
from ..formats.onnx.genai_config import genai_config
from ..formats.onnx.layers import PRECISIONS
from ..formats.spec import LongRopeSpec
from ..formats.spec_inputs import with_start_tokens
from .file_transfer import copy_small_files

log = logging.getLogger(__name__)

# A protobuf message cannot exceed 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_900_000_000
# int4 as onnxruntime-genai's builder ships it for CPU: MatMulNBits, blocks of 32, symmetric, accuracy level 4
# (int8 activations inside the kernel). Gather (embeddings), norms and the rope tables stay fp32.
INT4_BLOCK_SIZE = 32
INT4_ACCURACY_LEVEL = 4


class ExportOptionError(LongRopeError):
    """An export-onnx option is out of range."""


class Int4UnavailableError(LongRopeError):
    """--dtype int4 needs onnxruntime's quantizer, which imports the onnx-ir package."""


@dataclass(frozen=True)
class OnnxExportResult:
    output: Path
    model_path: Path
    spec: LongRopeSpec
    external_data: bool
    seconds: float


def export_onnx(src: Path, out: Path, dtype: str = "fp32", opset: int = DEFAULT_OPSET, with_past: bool = True,
                force: bool = False, frozen_factor_set: FactorSet | None = None,
                external_data: bool | None = None, start_tokens: int = 0,
                attention: str = DEFAULT_ATTENTION) -> OnnxExportResult:
    """Write OUT/model.onnx (+ model.onnx.data over ~2 GB, or when `external_data` is True), genai_config.json
    (graphs with a KV cache only) and the tokenizer files. Everything is validated before OUT is touched; OUT
    appears whole or not at all. `start_tokens` (LongRoPE v1 n_hat): positions below it run plain RoPE inside the
    graph. `attention`: "gqa" (onnxruntime's fused GroupQueryAttention, memory linear in length) or "standard"
    (plain ops, [heads, T, T] scores); `dtype` "int4" quantizes every MatMul weight to MatMulNBits."""
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    _check_options(dtype, opset, attention)
    source = open_checkpoint(src)  # config, architecture and weight headers checked
    spec = with_start_tokens(source.require_spec(), start_tokens)  # n_hat checked (0..L_orig) before OUT
    if external_data is None and dtype != INT4:  # int4 decides from the quantized size (_save)
        external_data = _weight_bytes(source, dtype) > EXTERNAL_DATA_THRESHOLD_BYTES
    check_output_path(out, [src], force)
    options = DecoderGraphOptions(dtype=dtype, opset=opset, with_past=with_past, frozen_factor_set=frozen_factor_set,
                                  start_tokens=spec.start_tokens, attention=attention)
    with atomic_output_dir(out, force) as tmp:
        _write_folder(tmp, src, source, options, external_data)
    seconds = time.perf_counter() - started
    external_data = (out / N.EXTERNAL_DATA_FILE).is_file()
    log.info("exported %s -> %s (%s, %s, %s attention, opset %d%s) in %.1f s", src, out / N.MODEL_FILE,
             source.arch.hf_class, dtype, attention, opset, ", external data" if external_data else "", seconds)
    if frozen_factor_set is None:
        log.info("factor set chosen in the graph: long iff past + current length > %d; attention factor %.6g",
                 spec.original_max_position_embeddings, spec.attention_factor)
    else:
        log.warning("deliberately frozen graph: %s factors at every length", frozen_factor_set.value)
    if spec.start_tokens:
        log.info("n_hat %d start tokens: positions below it use plain RoPE (no attention factor) in the graph; "
                 "transformers and llama.cpp cannot do this", spec.start_tokens)
    return OnnxExportResult(out, out / N.MODEL_FILE, spec, external_data, seconds)


def _write_folder(tmp: Path, src: Path, source: Checkpoint, options: DecoderGraphOptions,
                  external_data: bool | None) -> None:
    """model.onnx (+ data), checked by onnx.checker from its path (valid over 2 GB), then the companion files."""
    import onnx

    quantize = options.dtype == INT4
    writer = _external_writer(tmp) if external_data and not quantize else None
    try:
        model = build_decoder_graph(source, options, writer, __version__)
    finally:
        if writer is not None:
            writer.close()
    model_path = tmp / N.MODEL_FILE
    if quantize:
        _save(_quantized_int4(model), model_path, bool(external_data))
    else:
        model_path.write_bytes(model.SerializeToString())
    del model
    onnx.checker.check_model(str(model_path))
    copy_small_files(src, COMPANION_FILES, tmp)
    if options.with_past:  # onnxruntime-genai needs a KV cache; a --no-past folder carries no genai_config.json
        (tmp / N.GENAI_CONFIG_FILE).write_text(json.dumps(genai_config(source, options), indent=2) + "\n")


def _quantized_int4(model):
    """Every MatMul with an initializer weight -> MatMulNBits (4 bits), with onnxruntime's own quantizer and the
    settings onnxruntime-genai's builder uses for CPU. Attention MatMuls of the standard form have no initializer
    operand and stay as they are; metadata_props survive."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:
        raise Int4UnavailableError(f"--dtype int4 needs onnxruntime's quantizer ({exc}); pip install onnx-ir") \
            from None
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=INT4_BLOCK_SIZE, is_symmetric=True,
                                     accuracy_level=INT4_ACCURACY_LEVEL, op_types_to_quantize=("MatMul",))
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    quantizer.process()
    return quantizer.model.model


def _save(model, path: Path, external_data: bool) -> None:
    """Write a whole in-memory model (the quantized one), its weights beside it when asked or too big."""
    import onnx

    if external_data or model.ByteSize() > EXTERNAL_DATA_THRESHOLD_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=N.EXTERNAL_DATA_FILE, size_threshold=1024)
    else:
        path.write_bytes(model.SerializeToString())


def _check_options(dtype: str, opset: int, attention: str) -> None:
    import onnx

    if dtype not in EXPORT_DTYPES:
        raise ExportOptionError(f"unsupported dtype {dtype!r} (choose from {', '.join(EXPORT_DTYPES)})")
    if attention not in ATTENTION_FORMS:
        raise ExportOptionError(f"unsupported attention {attention!r} (choose from {', '.join(ATTENTION_FORMS)})")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ExportOptionError(f"opset {opset} is not supported (choose {MIN_OPSET}..{newest})")


def _weight_bytes(source: Checkpoint, dtype: str) -> int:
    """Bytes of the weights as the graph stores them (int4 counts its fp32 build, quantized only afterwards)."""
    width = PRECISIONS[GRAPH_PRECISION[dtype]].np_dtype(0).nbytes
    return sum(math.prod(t.shape) * width for t in source.tensors.values() if t.dtype in DTYPE_BYTES)


def _external_writer(folder: Path):
    from ..formats.onnx.graph_builder import ExternalDataWriter

    return ExternalDataWriter(folder / N.EXTERNAL_DATA_FILE)


def export_traced_frozen(src: Path, out: Path, example_length: int, **kwargs) -> OnnxExportResult:
    """A deliberately WRONG graph: the one a TorchScript trace at `example_length` tokens produces (the branch
    the example took is baked in). Used by tests and the verifier to prove that the checks catch a freeze."""
    spec = open_checkpoint(Path(src)).require_spec()
    frozen = spec.factor_set_for_length(example_length)
    return export_onnx(src, out, frozen_factor_set=frozen, **kwargs)
