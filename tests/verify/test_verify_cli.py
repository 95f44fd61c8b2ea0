"""`longrope-convert verify` end to end on the tiny checkpoints with the transformers target (always available).

Exit codes: 0 all pass, 1 mismatch, 2 bad usage or input. The wrong-attention-factor case shows how the truth is
chosen: the reference reads the spec from SRC's config unless --reference-spec names the intended one.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from longrope_convert.convert.cli import main
from longrope_convert.verify.report_files import load_schema

LENGTHS = "200,256,257,600,255+2"  # L_orig is 256


def run_verify(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def llama(demo_models) -> Path:
    return demo_models["LlamaForCausalLM"].baked


@pytest.fixture(scope="module", params=["edited", "baked"])
def wrong_attention(request, demo_models, llama, tmp_path_factory) -> Path:
    """Attention factor 1.0 where the truth is sqrt(1 + ln 4 / ln 256) = 1.118: either the good checkpoint's
    config.json edited in a copy, or the plain checkpoint baked with the same factors and --attention-factor 1.0."""
    root = tmp_path_factory.mktemp("wrong_af")
    if request.param == "baked":
        from longrope_convert.convert.bake import bake_checkpoint
        from longrope_convert.formats.spec_inputs import SpecRequest

        factors = llama.parent
        spec_request = SpecRequest(long_factors=factors / "long_factors.csv",
                                   short_factors=factors / "short_factors.csv",
                                   max_position_embeddings=1024, attention_factor=1.0)
        return bake_checkpoint(demo_models["LlamaForCausalLM"].plain, root / "llama", spec_request).output
    copy = root / "llama"
    shutil.copytree(llama, copy)
    config = json.loads((copy / "config.json").read_text())
    for key in ("rope_scaling", "rope_parameters"):
        if isinstance(config.get(key), dict):
            config[key]["attention_factor"] = 1.0
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_good_checkpoint_passes_with_json_and_junit(llama, tmp_path, capsys):
    json_out, junit_out = tmp_path / "report.json", tmp_path / "report.xml"
    code, out, _ = run_verify([str(llama), "--lengths", LENGTHS, "--json", str(json_out), "--junit", str(junit_out)],
                              capsys)
    assert code == 0
    assert out.splitlines()[-1].startswith("PASS: 5 passed, 0 failed")
    data = json.loads(json_out.read_text())
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(data, load_schema())
    results = data["results"]
    assert [r["label"] for r in results] == LENGTHS.split(",")
    assert [r["factor_set"] for r in results] == ["short", "short", "long", "long", "short->long"]
    assert [r["reference_set"] for r in results] == ["short", "short", "long", "long", "short->long"]
    assert all(r["status"] == "pass" for r in results)
    assert max(r["metrics"]["relative_l2"] for r in results) < 1e-5  # measured ~1e-6
    assert min(r["metrics"]["top1_agreement"] for r in results) == 1.0
    assert data["reference"]["dtype"] == "float64" and data["reference"]["attention_factor"] == pytest.approx(
        (1 + torch.log(torch.tensor(4.0)).item() / torch.log(torch.tensor(256.0)).item()) ** 0.5)
    suite = ET.parse(junit_out).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "0", "0")


def test_a_tighter_tolerance_turns_the_same_run_into_a_mismatch(llama, tmp_path, capsys):
    junit_out = tmp_path / "report.xml"
    code, out, _ = run_verify([str(llama), "--lengths", "200,600", "--tolerance", "transformers.rel_l2=1e-12",
                               "--junit", str(junit_out)], capsys)
    assert code == 1
    assert "MISMATCH: 0 passed, 2 failed" in out
    failures = [c.find("failure") for c in ET.parse(junit_out).getroot().iter("testcase")]
    assert all(f is not None and f.get("message").startswith("rel_l2") for f in failures)


def test_wrong_attention_factor_fails_against_the_intended_spec(llama, wrong_attention, capsys):
    code, out, err = run_verify([str(wrong_attention), "--lengths", "200,600", "--reference-spec", str(llama)],
                                capsys)
    assert code == 1
    assert "differs from the reference spec: attention_factor 1.0" in err
    rows = [line for line in out.splitlines() if line.startswith("transformers")]
    assert len(rows) == 2 and all("FAIL (rel_l2" in row for row in rows)
    # Without --reference-spec the truth is SRC's own config: faithful to a wrong number, so it passes.
    code, out, _ = run_verify([str(wrong_attention), "--lengths", "200,600"], capsys)
    assert code == 0


@pytest.mark.parametrize("extra, message", [
    (["--lengths", "12,abc"], "--lengths: cannot read 'abc'"),
    (["--tolerance", "speed=3"], "metric must be one of"),
    (["--target", "tensorrt=x"], "unknown kind 'tensorrt'"),
    (["--no-transformers"], "nothing to verify"),
])
def test_bad_usage_exits_2_with_one_line(llama, capsys, extra, message):
    code, _, err = run_verify([str(llama), *extra], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_bad_inputs_exit_2(demo_models, llama, tmp_path, capsys):
    code, _, err = run_verify([str(demo_models["LlamaForCausalLM"].plain)], capsys)
    assert code == 2 and "not a LongRoPE checkpoint" in err
    code, _, err = run_verify([str(llama), "--json", str(tmp_path)], capsys)
    assert code == 2
    code, _, err = run_verify([str(llama), "--json", str(llama / "report.json")], capsys)
    assert code == 2 and "inside the input folder" in err
    if not torch.cuda.is_available():
        code, _, err = run_verify([str(llama), "--device", "cuda"], capsys)
        assert code == 2 and "no CUDA device" in err
