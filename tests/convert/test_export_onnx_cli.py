"""`longrope-convert export-onnx` as users run it: layout options, external data, and bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from longrope_convert.convert.demo.tiny_checkpoint import write_tiny_checkpoint
from longrope_convert.convert.export_onnx import export_onnx
from longrope_convert.formats.onnx import names as N
from longrope_convert.verify.metrics import compare_logits

from ..conftest import tree_digest
from .onnx_fixtures import FP32_REL_L2, LONG_LEN, as_torch, reference, session, token_ids


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "longrope_convert.convert", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("attention", ["gqa", "standard"])
def test_cli_no_past_graph_has_three_inputs_and_logits(llama_model, tmp_path, attention):
    out = tmp_path / "onnx"
    proc = _cli("export-onnx", llama_model.baked, "-o", out, "--no-past", "--opset", "18", "--attention", attention)
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(str(out / N.MODEL_FILE))
    assert [i.name for i in model.graph.input] == [N.INPUT_IDS, N.ATTENTION_MASK, N.POSITION_IDS]
    assert [o.name for o in model.graph.output] == [N.LOGITS]
    assert model.opset_import[0].version == 18
    sess = session(out)
    assert not sess.has_past
    ids = token_ids(LONG_LEN)
    logits, present = sess.forward(ids.numpy())
    assert present == []
    with pytest.raises(ValueError, match="no-past"):
        sess.forward(ids.numpy(), past=[])
    cmp = compare_logits(reference(llama_model.baked).forward(ids).logits, as_torch(logits))
    assert cmp.relative_l2 <= FP32_REL_L2 and cmp.top1_agreement == 1.0
    # onnxruntime-genai needs a KV cache (it crashed on a cache-less genai_config): no config, no false promise
    assert not (out / N.GENAI_CONFIG_FILE).exists()
    ops = {n.op_type for n in model.graph.node}
    assert ("GroupQueryAttention" in ops) == (attention == "gqa")


def test_external_data_gives_the_same_logits(llama_model, tmp_path):
    inline = export_onnx(llama_model.baked, tmp_path / "inline")
    external = export_onnx(llama_model.baked, tmp_path / "external", external_data=True)
    assert external.external_data and (external.output / N.EXTERNAL_DATA_FILE).stat().st_size > 0
    assert (external.output / N.MODEL_FILE).stat().st_size < 100_000
    onnx.checker.check_model(str(external.model_path))
    ids = token_ids(300).numpy()
    a, b = session(inline.output).forward(ids)[0], session(external.output).forward(ids)[0]
    np.testing.assert_array_equal(a, b)


def test_export_is_deterministic(llama_model, tmp_path):
    first = export_onnx(llama_model.baked, tmp_path / "a").model_path.read_bytes()
    assert export_onnx(llama_model.baked, tmp_path / "b").model_path.read_bytes() == first


@pytest.fixture
def plain_checkpoint(tmp_path):
    return write_tiny_checkpoint(tmp_path / "plain", "LlamaForCausalLM", seed=3)


def _truncated(src, tmp_path):
    bad = tmp_path / "truncated"
    shutil.copytree(src, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return bad


@pytest.mark.parametrize("case, message", [
    ("missing", "source checkpoint folder not found"),
    ("plain", "not a LongRoPE checkpoint"),
    ("truncated", "truncated or lying header"),
    ("opset", "opset 5 is not supported"),
    ("exists", "already exists; pass --force"),
])
def test_bad_input_one_line_exit_2_nothing_written(llama_model, plain_checkpoint, tmp_path, case, message):
    src = {"missing": tmp_path / "nope", "plain": plain_checkpoint,
           "truncated": _truncated(llama_model.baked, tmp_path)}.get(case, llama_model.baked)
    out = tmp_path / "out"
    if case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = tree_digest(src) if src.exists() else {}
    extra = ["--opset", "5"] if case == "opset" else []
    proc = _cli("export-onnx", src, "-o", out, *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert (tree_digest(src) if src.exists() else {}) == before
    if case == "exists":
        assert tree_digest(out) == {"keep.txt": tree_digest(out)["keep.txt"]}
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_force_replaces_an_existing_output(llama_model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    proc = _cli("export-onnx", llama_model.baked, "-o", out, "--force", "--dtype", "fp16")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "old.txt").exists() and (out / N.MODEL_FILE).is_file()


NO_TORCH_EXPORT = """
import sys
sys.modules['torch'] = None  # any import of torch or transformers now fails
sys.modules['transformers'] = None
from longrope_convert.convert.export_onnx import export_onnx
export_onnx(sys.argv[1], sys.argv[2])
"""


def test_export_needs_neither_torch_nor_transformers(llama_model, tmp_path):
    """No tracing: the graph cannot depend on the installed transformers version or on an example input."""
    subprocess.run([sys.executable, "-c", NO_TORCH_EXPORT, str(llama_model.baked), str(tmp_path / "a")], check=True)
    in_process = export_onnx(llama_model.baked, tmp_path / "b").model_path.read_bytes()
    assert (tmp_path / "a" / N.MODEL_FILE).read_bytes() == in_process


@pytest.mark.parametrize("option, message", [
    ({"attention": "flash"}, "unsupported attention 'flash' (choose from gqa, standard)"),
    ({"dtype": "int8"}, "unsupported dtype 'int8' (choose from fp32, fp16, int4)"),
])
def test_bad_export_options_are_user_errors(llama_model, tmp_path, option, message):
    from longrope_convert.convert.export_onnx import ExportOptionError

    with pytest.raises(ExportOptionError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        export_onnx(llama_model.baked, tmp_path / "out", **option)
    assert info.value.exit_code == 2 and not (tmp_path / "out").exists()
