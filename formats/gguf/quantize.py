"""llama.cpp's own quantizer (llama-cpp-python's `llama_model_quantize`) for the types people ship: q4_0, q4_k_m,
q5_k_m, q6_k. Never a re-implementation: hf-to-gguf writes a lossless intermediate GGUF beside the output, this
module turns it into the quantized file, and the caller deletes the intermediate.

llama.cpp keeps 1-D tensors (norms, the F32 factor tensors) as they are and copies every metadata key (ours
included), setting only `general.file_type`. Rows that are not a multiple of a type's block size (256 for K-quants)
fall back per tensor (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, else F16): the count is logged.

The quantizer is one blocking C call with no cancel hook. Its log callback drives the progress bar; an interrupt
(Ctrl-C, SIGTERM) arriving while it runs is raised when the call returns, so the caller's cleanup still runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from ..atomic_output import PARTIAL_MARK, sibling_name
from ..errors import LongRopeError, OutputPathError
from .dtypes import OutType

log = logging.getLogger(__name__)

LLAMA_EXTRA = "longrope-convert[llama]"
INTERMEDIATE_MARK = "intermediate-"  # .OUT.partial-intermediate-XXXX.gguf beside OUT
# "[  12/  23]   blk.0.attn_q.weight - [...]": the quantizer's per-tensor log line (llama-quant.cpp)
TENSOR_LINE = re.compile(rb"^\[\s*(\d+)/\s*(\d+)\]")
FALLBACK_TEXT = b"falling back to"
GGML_LOG_LEVEL_ERROR = 3


class MissingQuantizerError(LongRopeError):
    """A quantized --outtype without llama-cpp-python installed."""


class QuantizeError(LongRopeError):
    """llama.cpp's quantizer refused or failed."""


def require_llama_cpp(outtype: str):
    """The llama_cpp module, or a one-line error saying which extra to install."""
    try:
        import llama_cpp
    except ImportError:
        raise MissingQuantizerError(f"--outtype {outtype} uses llama.cpp's quantizer: pip install "
                                    f"'{LLAMA_EXTRA}' (llama-cpp-python is not installed)") from None
    return llama_cpp


@contextlib.contextmanager
def intermediate_file(out: Path) -> Iterator[Path]:
    """A fresh file beside `out` (created exclusively, never through a link) that is deleted on the way out,
    whether the block succeeds, fails or is interrupted."""
    folder = out.absolute().parent.resolve()
    for _ in range(100):
        path = folder / sibling_name(out, PARTIAL_MARK, f"{INTERMEDIATE_MARK}{secrets.token_hex(4)}.gguf")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            os.close(os.open(path, flags, 0o600))
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputPathError(f"cannot write the intermediate GGUF beside the output ({exc.strerror})",
                                  out) from None
    else:
        raise OutputPathError("cannot find a free temp name beside the output", out)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _QuantizeLog:
    """llama.cpp's log lines during quantization: advance the bar per tensor, count fallbacks, keep errors, and
    hold back an exception raised inside the callback (ctypes would print and drop it) for after the call."""

    def __init__(self, bar: tqdm):
        self.bar = bar
        self.fallbacks = 0
        self.errors: list[str] = []
        self.pending: BaseException | None = None

    def on_log(self, level: int, text: bytes | None, _user_data) -> None:
        try:
            text = text or b""
            match = TENSOR_LINE.match(text)
            if match:
                self.bar.total = int(match.group(2))
                self.bar.update(int(match.group(1)) - self.bar.n)
            self.fallbacks += text.count(FALLBACK_TEXT)
            if level == GGML_LOG_LEVEL_ERROR:
                self.errors.append(" ".join(text.decode("utf-8", "replace").split()))
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt / Terminated land here; re-raised later
            self.pending = self.pending or exc


@contextlib.contextmanager
def _capturing_llama_log(llama_cpp, sink: _QuantizeLog) -> Iterator[None]:
    """Route llama.cpp's log to `sink` for the block, then give llama-cpp-python its own callback back."""
    callback = llama_cpp.llama_log_callback(sink.on_log)  # keep a reference while C may call it
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def quantize_gguf(src: Path, dst: Path, outtype: OutType, n_tensors: int, progress: bool | None = None) -> int:
    """Quantize the GGUF `src` into `dst` with llama.cpp's default parameters and `outtype`'s ftype; returns
    the number of tensors that fell back to another type. The bar (stderr) counts tensors."""
    llama_cpp = require_llama_cpp(outtype.name)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, str(outtype.llama_ftype))
    bar = tqdm(total=n_tensors, unit="tensor", desc=f"quantize {outtype.name}", file=sys.stderr,
               disable=None if progress is None else not progress)
    sink = _QuantizeLog(bar)
    log.info("quantizing to %s with llama.cpp's quantizer", outtype.name)
    try:
        with _capturing_llama_log(llama_cpp, sink):
            status = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    finally:
        bar.close()
    if sink.pending is not None:
        raise sink.pending
    if status != 0:
        detail = "; ".join(sink.errors[-2:]) or f"status {status}"
        raise QuantizeError(f"llama.cpp's quantizer failed for --outtype {outtype.name} ({detail})", src)
    if sink.fallbacks:
        log.warning("%d tensor(s) have rows that are not a multiple of the %s block size; llama.cpp stored them as "
                    "a fallback type", sink.fallbacks, outtype.name)
    return sink.fallbacks
