"""Tolerances from each case's float32 precision floor: an exact conversion of a sharp-attention model passes at
lengths where the fixed table false-alarms, and wrong factors still fail."""

import json

import pytest
from longrope_convert.verify.runner import VerifyOptions, run_verification

SHARP_STD = 0.25  # projection weights this sharp make float32 rope-angle error visible by 2k tokens
LENGTH = "2000"


@pytest.fixture(scope="module")
def sharp_model(tmp_path_factory):
    """A 16/4-head LLaMA whose projections have std 0.25, baked with example factors (L_orig 256 -> 4096)."""
    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.models import write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint
    from longrope_convert.formats.spec_inputs import SpecRequest
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("sharp")
    shape = TinyShape(hidden_size=512, intermediate_size=1024, num_heads=16, num_kv_heads=4, head_dim=32)
    plain = write_tiny_checkpoint(root / "plain", "LlamaForCausalLM", shape, seed=5)
    tensors = load_file(plain / "model.safetensors")
    for name in [n for n in tensors if "_proj" in n]:
        tensors[name] = tensors[name] / tensors[name].std() * SHARP_STD
    save_file(tensors, plain / "model.safetensors", metadata={"format": "pt"})
    long_path, short_path = write_example_factor_files(root, shape.head_dim)
    request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=4096)
    return bake_checkpoint(plain, root / "baked", request).output


def _row(baked, **options):
    report = run_verification(VerifyOptions(src=baked, lengths=LENGTH, device="cpu", progress=False, **options))
    (row,) = report.results
    return report, row


def test_fixed_table_false_alarms_and_the_floor_does_not(sharp_model):
    _, fixed = _row(sharp_model, precision_floor=False)
    assert fixed.status == "fail" and fixed.metrics["relative_l2"] > fixed.tolerance["rel_l2"]
    report, floored = _row(sharp_model)
    assert floored.status == "pass", floored.failures
    floor = report.cases[0].precision_floor["long"]
    # transformers float32 is exactly as far from the truth as the float32 reference: the floor is the runtime's
    assert floored.metrics["relative_l2"] == pytest.approx(floor["rel_l2"], rel=0.05)
    assert floored.tolerance["rel_l2"] == pytest.approx(4 * floor["rel_l2"])
    assert floored.tolerance["floor"]["margin"] == 4.0


def test_swapped_factors_still_fail_with_the_floor(sharp_model, tmp_path):
    config = json.loads((sharp_model / "config.json").read_text())
    for key in ("rope_scaling", "rope_parameters"):
        rope = config[key]
        rope["long_factor"], rope["short_factor"] = rope["short_factor"], rope["long_factor"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    _, row = _row(sharp_model, reference_spec=tmp_path / "config.json")
    assert row.status == "fail" and row.metrics["relative_l2"] > 10 * row.tolerance["rel_l2"]
