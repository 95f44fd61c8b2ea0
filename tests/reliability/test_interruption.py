"""A conversion killed at a random point (SIGINT, SIGTERM, SIGHUP or SIGKILL) never leaves anything at the output
path, and a re-run succeeds. SIGINT, SIGTERM (how CI runners cancel) and SIGHUP also clean up the partial output."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from longrope_convert.convert.demo.example_factors import example_long_factors
from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint
from longrope_convert.formats.hf.config import read_config, spec_from_config

# ~270 MB of float32 weights: long enough to copy or convert that a kill lands mid-way.
BIG_SHAPE = TinyShape(hidden_size=1024, intermediate_size=4096, num_layers=4, num_heads=8, num_kv_heads=8,
                      head_dim=128, vocab_size=512)


def _gguf_complete(out: Path) -> bool:
    from longrope_convert.formats.gguf.reader import read_gguf_spec

    return read_gguf_spec(out).max_position_embeddings == 1024


def _onnx_complete(out: Path) -> bool:
    from longrope_convert.formats.onnx.metadata import read_metadata, spec_from_metadata

    return spec_from_metadata(read_metadata(out / "model.onnx")).max_position_embeddings == 1024


def _baked_complete(out: Path) -> bool:
    return spec_from_config(read_config(out)).max_position_embeddings == 1024


@dataclass(frozen=True)
class Conversion:
    name: str
    argv: Callable[[Path, Path], list[str]]
    complete: Callable[[Path], bool]
    output_name: str


CONVERSIONS = [
    Conversion("bake", lambda src, out: ["bake", str(src), "-o", str(out), "--copy-weights"], _baked_complete, "out"),
    Conversion("hf-to-gguf", lambda src, out: ["hf-to-gguf", str(src), "-o", str(out), "--no-vocab", "--outtype", "f16"],
               _gguf_complete, "out.gguf"),
    Conversion("export-onnx", lambda src, out: ["export-onnx", str(src), "-o", str(out)], _onnx_complete, "onnx"),
]


@pytest.fixture(scope="module")
def big_src(tmp_path_factory) -> Path:
    """A plain ~270 MB checkpoint baked to LongRoPE 256 -> 1024 (weights hard-linked)."""
    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.formats.spec_inputs import SpecRequest

    root = tmp_path_factory.mktemp("big")
    plain = write_tiny_checkpoint(root / "plain", "LlamaForCausalLM", BIG_SHAPE, seed=2)
    (root / "long.csv").write_text("\n".join(map(str, example_long_factors(128, 4.0))))
    return bake_checkpoint(plain, root / "src", SpecRequest(long_factors=root / "long.csv",
                                                            max_position_embeddings=1024)).output


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "longrope_convert.convert", *args]


# the exit code and message each signal must give when the process gets to handle it (SIGKILL cannot be handled)
HANDLED = {
    signal.SIGINT: (130, "error: "),
    signal.SIGTERM: (128 + signal.SIGTERM, "error: interrupted by SIGTERM; nothing was written at the output path"),
    signal.SIGHUP: (128 + signal.SIGHUP, "error: interrupted by SIGHUP; nothing was written at the output path"),
}
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL]


def _wait_for_partial_output(out, proc, limit: float) -> float:
    """Seconds until a `.OUT.partial-*` temp output appears beside OUT (or the command ends, or `limit` passes)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit and proc.poll() is None:
        if any(out.parent.glob(f".{out.name}.partial-*")):
            break
        time.sleep(0.01)
    return time.perf_counter() - start


@pytest.mark.parametrize("conversion", CONVERSIONS, ids=[c.name for c in CONVERSIONS])
@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_killed_conversion_leaves_nothing_and_rerun_succeeds(tmp_path, big_src, conversion, sig):
    start = time.perf_counter()
    subprocess.run(_cli(conversion.argv(big_src, tmp_path / f"timing-{conversion.output_name}")),
                   check=True, capture_output=True)
    full = time.perf_counter() - start
    rng = random.Random(f"{conversion.name}-{int(sig)}")
    for attempt in range(2):
        out = tmp_path / f"{attempt}-{conversion.output_name}"
        proc = subprocess.Popen(_cli(conversion.argv(big_src, out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        # signal once the command is writing (its handlers are installed then; a signal during the interpreter's
        # own start-up is not the command's to handle), at a random point of the remaining time
        waited = _wait_for_partial_output(out, proc, full * 3)
        time.sleep(rng.uniform(0.0, 0.7) * max(full - waited, 0.05))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        finished = out.exists()
        if finished:
            assert conversion.complete(out)  # the kill came after the final rename: whole, never partial
        elif sig in HANDLED:
            code, message = HANDLED[sig]
            assert proc.returncode == code and message in err and "Traceback" not in err, err
            assert not list(tmp_path.glob(f".{out.name}.partial-*"))  # cleaned up, not left for the next run
        rerun = subprocess.run(_cli(conversion.argv(big_src, out) + (["--force"] if finished else [])),
                               capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert conversion.complete(out)
