"""export-onnx --dtype int4: onnxruntime's MatMulNBits quantizer on every weight MatMul (block 32, symmetric), the
rest untouched; verify reads precision "int4" from the metadata, passes the good graph and still fails a frozen one."""

from __future__ import annotations

import json

import onnx
import pytest
from longrope_convert.convert.cli import main
from longrope_convert.convert.export_onnx import INT4_BLOCK_SIZE, export_onnx, export_traced_frozen
from longrope_convert.formats.onnx import names as N
from longrope_convert.formats.onnx.metadata import facts_from_metadata, read_metadata
from longrope_convert.formats.onnx.rotary import ATTENTION_FACTOR, LONG_INV_FREQ, SHORT_INV_FREQ

from .onnx_fixtures import SHORT_LEN

pytest.importorskip("onnx_ir")  # onnxruntime's quantizer imports it
LENGTHS = "200,256,257,600,255+2"  # L_orig 256
# Measured on the demo models (see verify/tolerances.py ("onnx", "int4")): rel_l2 0.153-0.165 at 200/600 tokens.
INT4_REL_L2_RANGE = (0.05, 0.21)


@pytest.fixture(scope="module")
def int4_pair(demo_models, tmp_path_factory):
    """Phi-3 (partial rotary, fused qkv): an int4 export and an int4 graph frozen as a trace at 200 tokens."""
    baked = demo_models["Phi3ForCausalLM"].baked
    root = tmp_path_factory.mktemp("int4")
    good = export_onnx(baked, root / "good", dtype="int4").output
    frozen = export_traced_frozen(baked, root / "frozen", SHORT_LEN, dtype="int4").output
    return baked, good, frozen


def test_int4_quantizes_weight_matmuls_only(int4_pair):
    _, good, _ = int4_pair
    model = onnx.load(str(good / N.MODEL_FILE))
    ops = [n.op_type for n in model.graph.node]
    quantized = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert "MatMul" not in ops  # every weight MatMul (qkv, o, gate_up, down per layer, lm_head) is quantized
    assert len(quantized) == 4 * 2 + 1
    for node in quantized:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["bits"] == 4 and attrs["block_size"] == INT4_BLOCK_SIZE and attrs["accuracy_level"] == 4
        assert len(node.input) < 4 or node.input[3] == ""  # symmetric: no zero points
    floats = {t.name: t.data_type for t in model.graph.initializer}
    for name in ("embed.weight", LONG_INV_FREQ, SHORT_INV_FREQ, ATTENTION_FACTOR, "final_norm.weight"):
        assert floats[name] == onnx.TensorProto.FLOAT, name
    assert ops.count("GroupQueryAttention") == 2
    assert facts_from_metadata(read_metadata(good / N.MODEL_FILE)).dtype == "int4"


def test_int4_is_smaller_than_fp32(int4_pair, tmp_path):
    """The tiny model is embedding-heavy (vocab 512 x 64, kept fp32), so the whole file shrinks by less than 8x."""
    baked, good, _ = int4_pair
    fp32 = export_onnx(baked, tmp_path / "fp32").output
    ratio = (good / N.MODEL_FILE).stat().st_size / (fp32 / N.MODEL_FILE).stat().st_size
    assert ratio < 0.6, ratio


def test_verify_int4_passes_good_and_fails_frozen(int4_pair, tmp_path, capsys):
    baked, good, frozen = int4_pair
    out = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(baked), "--onnx", str(good), "--onnx", str(frozen), "--lengths", LENGTHS,
              "--no-transformers", "--json", str(out)])
    capsys.readouterr()
    results = json.loads(out.read_text())["results"]
    assert exit_info.value.code == 1
    good_rows = {r["label"]: r for r in results if "onnx:good (int4)" in r["target"]}
    frozen_rows = {r["label"]: r for r in results if "onnx:frozen (int4)" in r["target"]}
    assert set(good_rows) == set(frozen_rows) == set(LENGTHS.split(","))
    assert all(r["status"] == "pass" for r in good_rows.values()), good_rows
    low, high = INT4_REL_L2_RANGE
    assert all(low < r["metrics"]["relative_l2"] < high for r in good_rows.values())
    assert {k: r["status"] for k, r in frozen_rows.items() if k in ("257", "600")} == {"257": "fail", "600": "fail"}
