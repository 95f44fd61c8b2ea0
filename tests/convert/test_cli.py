import subprocess
import sys
import time

import pytest
from longrope_convert.convert.cli import COMMANDS

NO_HEAVY_IMPORTS = """
import sys
from longrope_convert.convert.cli import cli
for args in (['--help'],) + tuple([name, '--help'] for name in {names!r}):
    try:
        cli.main(args=list(args), standalone_mode=False)
    except SystemExit:
        pass
heavy = sorted(m for m in ('torch', 'transformers', 'onnx', 'onnxruntime', 'llama_cpp', 'gguf', 'numpy')
               if m in sys.modules)
print('HEAVY', heavy)
"""


def test_help_never_imports_torch_or_other_heavy_modules():
    code = NO_HEAVY_IMPORTS.format(names=sorted(COMMANDS))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_help_is_fast():
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "longrope_convert.convert", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 2.0  # well under a second on an idle machine; margin for busy CI


@pytest.mark.parametrize("args, message", [
    (["bake", "/nonexistent-dir", "-o", "/tmp/x"], "source checkpoint folder not found"),
    (["inspect", "/nonexistent-file"], "does not exist"),
    (["nosuchverb"], "No such command"),
])
def test_usage_errors_exit_2_without_traceback(args, message):
    proc = subprocess.run([sys.executable, "-m", "longrope_convert.convert", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_inspect_prints_the_spec_table(llama_model, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "factors.png"
    proc = subprocess.run([sys.executable, "-m", "longrope_convert.convert", "inspect", str(llama_model.baked),
                           "--plot", str(png)], capture_output=True, text=True, check=True)
    assert "L_orig 256, max_position_embeddings 1024, scale s 4" in proc.stdout
    assert "attention factor 1.118033989" in proc.stdout
    assert len([line for line in proc.stdout.splitlines() if line[:4].strip().isdigit()]) == 8
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_reads_a_factor_file(shared_factors):
    proc = subprocess.run([sys.executable, "-m", "longrope_convert.convert", "inspect",
                           str(shared_factors / "longrope-llama2-7b-128k.per-layer.csv")],
                          capture_output=True, text=True, check=True)
    assert "64 entries (rotary dim 128)" in proc.stdout


def test_inspect_reads_the_spec_back_from_an_onnx_export(llama_model, tmp_path):
    from longrope_convert.convert.export_onnx import export_onnx

    export_onnx(llama_model.baked, tmp_path / "onnx")
    proc = subprocess.run([sys.executable, "-m", "longrope_convert.convert", "inspect", str(tmp_path / "onnx")],
                          capture_output=True, text=True, check=True)
    assert "L_orig 256, max_position_embeddings 1024" in proc.stdout
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf")
    bad = subprocess.run([sys.executable, "-m", "longrope_convert.convert", "inspect", str(tmp_path / "bad.onnx")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not a readable ONNX model" in bad.stderr


def test_inspect_reads_the_spec_back_from_a_gguf(llama_model, tmp_path):
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf

    convert_hf_to_gguf(llama_model.baked, tmp_path / "m.gguf", outtype="f32", progress=False)
    proc = subprocess.run([sys.executable, "-m", "longrope_convert.convert", "inspect", str(tmp_path / "m.gguf")],
                          capture_output=True, text=True, check=True)
    assert "L_orig 256, max_position_embeddings 1024" in proc.stdout and "attention factor 1.118033989" in proc.stdout
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x00" * 7)
    bad = subprocess.run([sys.executable, "-m", "longrope_convert.convert", "inspect", str(tmp_path / "bad.gguf")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "bad.gguf" in bad.stderr and "Traceback" not in bad.stderr
