"""The GGUF data path: the bf16 -> f16 kernel gives the lookup table's bits for every input, the parallel
positional writer gives gguf-py's own GGUFWriter bytes (data, padding, metadata), and a worker's error is the
caller's error, with nothing left at the output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
from longrope_convert.convert import hf_to_gguf
from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf
from longrope_convert.formats.errors import CheckpointError
from longrope_convert.formats.gguf import tensors, writer
from longrope_convert.formats.gguf.dtypes import _bf16_to_f16_table, bf16_to_f16_bits
from longrope_convert.formats.spec_inputs import SpecRequest

from ..conftest import tree_digest
from ..convert.gguf_fixtures import gguf_models
from ..reliability.refusal import run_cli

__all__ = ["gguf_models"]

TABLE = _bf16_to_f16_table().view(np.uint16)


@pytest.mark.parametrize("shift", range(8))
def test_kernel_gives_the_table_bits_for_every_bf16_pattern(shift):
    """All 65536 inputs, each at every position within an 8-element word of the out-of-range mask."""
    raw = np.roll(np.arange(65536, dtype=np.uint16), shift)
    out = np.empty_like(raw)
    bf16_to_f16_bits(raw, out)
    np.testing.assert_array_equal(out, TABLE[raw])


@pytest.mark.parametrize("size", [1, 7, 9, 1001, 65533])
def test_kernel_handles_a_tail_shorter_than_a_mask_word(size):
    raw = np.random.default_rng(size).integers(0, 65536, size, dtype=np.uint16)
    out = np.empty_like(raw)
    bf16_to_f16_bits(raw, out)
    np.testing.assert_array_equal(out, TABLE[raw])


def test_kernel_reads_permuted_heads_as_a_strided_view():
    """Q/K chunks reach the kernel as (heads, d/2, 2, row) views of the rows; the output is their order."""
    rows = np.random.default_rng(0).integers(0, 65536, (4 * 16, 24), dtype=np.uint16)
    view = tensors._interleaved_heads(rows, 16)
    out = np.empty(view.shape, np.uint16)
    bf16_to_f16_bits(view, out)
    perm = np.arange(16).reshape(2, 8).T.reshape(-1)  # llama.cpp's LlamaModel.permute within a head
    expected = rows.reshape(4, 16, 24)[:, perm].reshape(-1, 24)
    np.testing.assert_array_equal(out.reshape(-1, 24), TABLE[expected])


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory) -> tuple[Path, SpecRequest]:
    """A plain bf16 LLaMA (permuted Q/K heads of 64 rows, ~3 MB of weights) and its LongRoPE factors."""
    import torch
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint

    root = tmp_path_factory.mktemp("bf16")
    shape = TinyShape(hidden_size=256, intermediate_size=512, num_heads=4, num_kv_heads=2, head_dim=64)
    src = write_tiny_checkpoint(root / "llama", "LlamaForCausalLM", shape, seed=0, dtype=torch.bfloat16)
    factors = root / "long.csv"
    factors.write_text("".join(f"{1 + i * 0.05!r}\n" for i in range(32)))
    return src, SpecRequest(long_factors=factors, max_position_embeddings=1024)


def _stock_write_gguf(path, arch_name, add_metadata, plans, progress=None) -> None:
    """The reference: gguf-py's GGUFWriter as it is, one tensor at a time in order, each converted whole."""
    stock = gguf.GGUFWriter(path, arch_name)
    add_metadata(stock)
    for plan in plans:
        stock.add_tensor_info(plan.name, writer._byte_shape(plan), np.dtype(np.uint8), plan.nbytes,
                              raw_dtype=plan.qtype)
    stock.write_header_to_file()
    stock.write_kv_data_to_file()
    stock.write_ti_data_to_file()
    for plan in plans:
        parts = [chunk.convert().reshape(-1).view(np.uint8) for chunk in plan.chunks()]
        stock.write_tensor_data(np.concatenate(parts))
    stock.close()


@pytest.mark.parametrize("outtype", ["f16", "f32", "bf16", "q8_0"])
def test_parallel_writer_gives_the_stock_writers_bytes(tmp_path, monkeypatch, bf16_llama, gguf_models, outtype):
    """bf16 LLaMA (the kernel, permuted heads) and the demo's float32 Phi-3 (fused tensors, vocabulary), in 64 KB
    chunks so that the larger matrices take several and the two workers interleave within a tensor."""
    src, request = bf16_llama
    monkeypatch.setattr(tensors, "CHUNK_BYTES", 1 << 16)
    for name, source, spec in (("llama", src, request), ("phi3", gguf_models["Phi3ForCausalLM"], None)):
        ours = tmp_path / f"{name}-ours.gguf"
        convert_hf_to_gguf(source, ours, spec, outtype=outtype, no_vocab=spec is not None, progress=False)
        with monkeypatch.context() as m:
            m.setattr(hf_to_gguf, "write_gguf", _stock_write_gguf)
            stock = tmp_path / f"{name}-stock.gguf"
            convert_hf_to_gguf(source, stock, spec, outtype=outtype, no_vocab=spec is not None, progress=False)
        assert ours.read_bytes() == stock.read_bytes(), (name, outtype)


def test_tiny_chunks_and_one_worker_give_the_same_bytes(tmp_path, monkeypatch, bf16_llama):
    """Chunks of one row or head (100 bytes), written by one worker or two: the same file."""
    src, request = bf16_llama
    reference = tmp_path / "reference.gguf"
    convert_hf_to_gguf(src, reference, request, outtype="f16", no_vocab=True, progress=False)
    monkeypatch.setattr(tensors, "CHUNK_BYTES", 100)
    for workers in (1, 2):
        monkeypatch.setattr(writer, "WORKERS", workers)
        out = tmp_path / f"tiny-chunks-{workers}.gguf"
        convert_hf_to_gguf(src, out, request, outtype="f16", no_vocab=True, progress=False)
        assert out.read_bytes() == reference.read_bytes()


def _fail_reads_from(monkeypatch, n: int, path: Path) -> None:
    """Every read of tensor rows from a worker's n-th on fails like a bad shard."""
    real, calls = tensors._read_rows, [0]

    def failing(*args, **kwargs):
        calls[0] += 1  # in the worker process: each counts its own reads
        if calls[0] >= n:
            raise CheckpointError("simulated read failure", path)
        return real(*args, **kwargs)

    monkeypatch.setattr(tensors, "_read_rows", failing)


def test_a_workers_read_error_is_raised_and_leaves_nothing(tmp_path, monkeypatch, bf16_llama):
    src, request = bf16_llama
    before = tree_digest(src)
    _fail_reads_from(monkeypatch, 5, src / "model.safetensors")
    out = tmp_path / "out.gguf"
    with pytest.raises(CheckpointError, match="simulated read failure"):
        convert_hf_to_gguf(src, out, request, outtype="f16", no_vocab=True, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".out.gguf.partial-*"))
    assert tree_digest(src) == before


def test_a_workers_read_error_is_one_error_line_and_exit_2(tmp_path, monkeypatch, capsys, bf16_llama):
    src, request = bf16_llama
    _fail_reads_from(monkeypatch, 5, src / "model.safetensors")
    out = tmp_path / "out.gguf"
    code, err = run_cli(["hf-to-gguf", str(src), "-o", str(out), "--no-vocab", "--long-factors",
                         str(request.long_factors), "--max-position-embeddings", "1024"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "simulated read failure" in errors[0] and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.gguf.partial-*"))


class _FakeChunk:
    """An 8-byte chunk whose conversion records its index in `log` (shared by the worker processes), sleeps a
    little, and does what `fail` says at index 3: raise an error, or kill its own process."""

    plan = SimpleNamespace(name="t", nbytes=8, source_nbytes=8)
    nbytes = source_nbytes = 8

    def __init__(self, i: int, log: Path, fail: str):
        self.i, self.log, self.fail = i, log, fail

    def convert(self, buffers, offset):
        with open(self.log, "a") as f:
            f.write(f"{self.i}\n")
        if self.i == 3 and self.fail == "error":
            raise CheckpointError("chunk 3 is bad")
        if self.i == 3 and self.fail == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.002)
        return np.full(8, self.i % 256, np.uint8)


class _Progress:
    total = 0

    def update(self, n: int) -> None:
        self.total += n


def _run_fake_chunks(tmp_path: Path, count: int, fail: str = "", workers: int = 2) -> tuple[list[int], _Progress]:
    log, progress = tmp_path / "taken", _Progress()
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        writer.run_workers(fd, ((_FakeChunk(i, log, fail), 8 * i) for i in range(count)), progress, workers)
    finally:
        os.close(fd)
        taken = [int(line) for line in log.read_text().split()] if log.exists() else []
    return taken, progress


def test_the_workers_write_every_chunk_once_and_report_progress(tmp_path):
    taken, progress = _run_fake_chunks(tmp_path, 50)
    assert sorted(taken) == list(range(50)) and progress.total == 50 * 8
    assert (tmp_path / "out").read_bytes() == bytes(np.repeat(np.arange(50, dtype=np.uint8), 8))


def test_an_error_stops_the_other_workers(tmp_path):
    """The first failing chunk ends the run (10,000 chunks of 2 ms would take 10 s): the error is the caller's."""
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="chunk 3 is bad"):
        _run_fake_chunks(tmp_path, 10_000, "error")
    assert time.perf_counter() - start < 5
    taken = [int(line) for line in (tmp_path / "taken").read_text().split()]
    assert 3 in taken and len(taken) < 2000


def test_a_killed_worker_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="GGUF writer process ended with status -9"):
        _run_fake_chunks(tmp_path, 10_000, "kill")


CTRL_C_SCRIPT = """
import os, signal, sys, time
import numpy as np
from longrope_convert.formats.gguf import writer

class Slow:
    nbytes = source_nbytes = 8
    def convert(self, buffers, offset):
        with open(sys.argv[1], "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(0.01)
        return np.zeros(8, np.uint8)

signal.signal(signal.SIGINT, signal.default_int_handler)
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o600)
writer.run_workers(fd, ((Slow(), 8 * i) for i in range(10_000)), writer._NoProgress())
"""


def test_ctrl_c_to_the_process_group_ends_the_workers_with_the_parent(tmp_path):
    """The workers ignore SIGINT: the parent gets KeyboardInterrupt and kills them before it propagates."""
    log = tmp_path / "pids"
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, str(log), str(tmp_path / "out")],
                            start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(set(log.read_text().split()) if log.exists() else ()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    workers = {int(pid) for pid in log.read_text().split()}
    assert "KeyboardInterrupt" in err and len(workers) == 2, err
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_preallocation_keeps_the_size_and_allocates_the_blocks(tmp_path):
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        writer._preallocate(fd, 1 << 20)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    assert st.st_size == 0
    if st.st_blocks == 0:
        pytest.skip("no fallocate here (not Linux, or a filesystem without it): the writes allocate")
    assert st.st_blocks * 512 >= 1 << 20


def test_chunks_are_read_and_converted_at_their_file_offsets_page_position(monkeypatch, bf16_llama):
    """The kernel's page-cache copies run at full speed only then (see tensors.PAGE)."""
    src, request = bf16_llama
    plans = hf_to_gguf.plan_conversion(src, request, "f16", "pair", True).plans
    reads = []

    def spy(info, view, r0, r1, row_shape, row_bytes, into=None):
        reads.append((into.ctypes.data - (info.begin + r0 * row_bytes)) % tensors.PAGE)
        return real(info, view, r0, r1, row_shape, row_bytes, into)

    real = tensors._read_rows
    monkeypatch.setattr(tensors, "_read_rows", spy)
    buffers = tensors.ChunkBuffers.of_size(1 << 16)
    outs = [(chunk.convert(buffers, offset).ctypes.data - offset) % tensors.PAGE
            for plan in plans if plan.source is not None and plan.qtype == gguf.GGMLQuantizationType.F16
            for chunk in plan.chunks(1 << 16) for offset in (0, 8, 4064, 12352)]
    assert reads and set(reads) == {0} and outs and set(outs) == {0}


@pytest.mark.parametrize("value", [
    ["a", "ß", "", "<0x0A>"], [b"\xff\x00", b"", bytearray(b"c"), "d"], [0.5, -1e-30, 3.4e38, 1e-50, -0.0],
    [1, -2, 2**31 - 1, -2**31], [True, False], [1, 2.0], [2**31], [1e39], ["a", 1],
])
def test_token_arrays_pack_as_gguf_py_packs_them(value):
    """The one-go packing of token lists gives GGUFWriter's bytes, and leaves what it cannot pack (bools, mixed
    or out-of-range items) to GGUFWriter, errors included."""
    def packed(cls):
        try:
            return cls(None, "llama")._pack_val(value, gguf.GGUFValueType.ARRAY, add_vtype=True)
        except Exception as exc:  # noqa: BLE001 - the error type is what is compared
            return type(exc)

    assert packed(writer._Writer) == packed(gguf.GGUFWriter)


def test_output_is_opened_without_truncation(tmp_path, monkeypatch, bf16_llama):
    """O_TRUNC on the temp file would make ext4 flush all the data inside close() (auto_da_alloc)."""
    src, request = bf16_llama
    real, flags = os.open, []

    def spy(path, flag, *args, **kwargs):
        if str(path).endswith(".gguf") or ".partial-" in str(path):
            flags.append(flag)
        return real(path, flag, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    convert_hf_to_gguf(src, tmp_path / "out.gguf", request, outtype="f16", no_vocab=True, progress=False)
    assert flags and not any(flag & os.O_TRUNC for flag in flags)
