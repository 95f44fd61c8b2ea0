import json
import os
import subprocess
import sys

import pytest
from longrope_convert.convert.bake import bake_checkpoint
from longrope_convert.convert.demo.tiny_checkpoint import write_tiny_checkpoint
from longrope_convert.formats.errors import FactorFileError, OutputPathError, SpecError, UnsupportedArchitectureError
from longrope_convert.formats.hf.config import read_config, spec_from_config
from longrope_convert.formats.spec_inputs import SpecRequest

from ..conftest import tree_digest


@pytest.fixture()
def plain(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "src", "LlamaForCausalLM", seed=3)
    (src / "tokenizer_config.json").write_text('{"model_max_length": 256}')
    (tmp_path / "long.csv").write_text("".join(f"{1 + i * 0.4:.18e}\n" for i in range(8)))
    return src


def request(tmp_path, **kw):
    fields = dict(long_factors=tmp_path / "long.csv", max_position_embeddings=1024)
    fields.update(kw)
    return SpecRequest(**fields)


def test_bake_writes_a_complete_checkpoint_and_leaves_the_source_alone(tmp_path, plain):
    before = tree_digest(plain)
    result = bake_checkpoint(plain, tmp_path / "out", request(tmp_path))
    out = tmp_path / "out"
    assert tree_digest(plain) == before
    assert (out / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
    assert {"config.json", "README.md", "tokenizer_config.json", "generation_config.json"} <= {p.name for p in out.iterdir()}
    assert result.weights_mode in ("hard-linked", "copied")
    spec = spec_from_config(read_config(out))
    assert spec.short_factor == (1.0,) * 8  # LongRoPE2 default
    assert spec.long_factor[1] == pytest.approx(1.4)
    assert (spec.original_max_position_embeddings, spec.max_position_embeddings) == (256, 1024)
    card = (out / "README.md").read_text()
    assert "L_orig" in card and "1024" in card and "rope_factors" not in card
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_llama_layout_loads_the_same_in_4x_and_5x(tmp_path, plain):
    bake_checkpoint(plain, tmp_path / "out", request(tmp_path, attention_factor=1.25))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    scaling = config["rope_scaling"]
    assert scaling["rope_type"] == scaling["type"] == "longrope"
    assert scaling["original_max_position_embeddings"] == config["original_max_position_embeddings"] == 256
    assert scaling["factor"] == 4.0 and scaling["attention_factor"] == 1.25
    assert config["head_dim"] == 16 and config["rope_theta"] == 10000.0
    assert config["rope_parameters"]["long_factor"] == scaling["long_factor"]


def test_phi3_layout_is_exactly_what_4x_accepts(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "phi", "Phi3ForCausalLM", seed=3)
    (tmp_path / "long.csv").write_text("\n".join(["2.0"] * 8))
    bake_checkpoint(src, tmp_path / "out", request(tmp_path))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert set(config["rope_scaling"]) == {"type", "short_factor", "long_factor"}
    assert config["original_max_position_embeddings"] == 256
    with pytest.raises(SpecError, match="explicit attention factor"):
        bake_checkpoint(src, tmp_path / "out2", request(tmp_path, attention_factor=1.5))
    assert not (tmp_path / "out2").exists()


def test_phi3_excerpt_supplies_both_sets(tmp_path, shared_factors):
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape

    src = write_tiny_checkpoint(tmp_path / "phi", "Phi3ForCausalLM", TinyShape(head_dim=96, hidden_size=384,
                                                                          num_heads=4, num_kv_heads=4), seed=3)
    excerpt = shared_factors / "phi-3-mini-128k.config-excerpt.json"
    bake_checkpoint(src, tmp_path / "out", SpecRequest(long_factors=excerpt, max_position_embeddings=131072,
                                                        original_max_position_embeddings=4096))
    spec = spec_from_config(read_config(tmp_path / "out"))
    assert len(spec.long_factor) == len(spec.short_factor) == 48
    assert spec.short_factor != (1.0,) * 48 and spec.long_factor[0] == pytest.approx(1.07, abs=1e-6)
    assert spec.attention_factor == pytest.approx(1.1902380714238083, abs=1e-15)


def test_existing_output_needs_force(tmp_path, plain):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(OutputPathError, match="--force"):
        bake_checkpoint(plain, tmp_path / "out", request(tmp_path))
    assert (tmp_path / "out" / "keep.txt").exists()
    bake_checkpoint(plain, tmp_path / "out", request(tmp_path), force=True)
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize("out_name", ["src", "src/inner"])
def test_output_equal_to_or_inside_input_is_refused(tmp_path, plain, out_name):
    before = tree_digest(plain)
    with pytest.raises(OutputPathError):
        bake_checkpoint(plain, tmp_path / out_name, request(tmp_path), force=True)
    assert tree_digest(plain) == before


def test_bad_factor_file_leaves_nothing(tmp_path, plain):
    (tmp_path / "long.csv").write_text("1.0\n2.0\n")
    with pytest.raises(FactorFileError, match="has 2 values, expected 8 \\(rotary dim 16 from head_dim 16 / 2\\)"):
        bake_checkpoint(plain, tmp_path / "out", request(tmp_path))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_unsupported_architecture(tmp_path, plain):
    config = json.loads((plain / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (plain / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="GPT2LMHeadModel"):
        bake_checkpoint(plain, tmp_path / "out", request(tmp_path))


def test_rebake_of_a_longrope_checkpoint_keeps_its_factors(tmp_path, plain):
    bake_checkpoint(plain, tmp_path / "a", request(tmp_path))
    bake_checkpoint(tmp_path / "a", tmp_path / "b", SpecRequest(max_position_embeddings=2048))
    a, b = (spec_from_config(read_config(tmp_path / n)) for n in "ab")
    assert a.long_factor == b.long_factor and b.max_position_embeddings == 2048


def test_cli_errors_are_one_line_with_exit_2(tmp_path, plain):
    (tmp_path / "long.csv").write_text("1.0\n2.0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "longrope_convert.convert", "bake", str(plain), "-o", str(tmp_path / "out"),
         "--long-factors", str(tmp_path / "long.csv"), "--max-position-embeddings", "1024"],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "long.csv" in errors[0] and "has 2 values, expected 8" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_remote_code_is_never_executed_nor_shipped(tmp_path, plain):
    """A config pointing at custom code: bake drops auto_map and copies no .py; loading runs no remote code."""
    from longrope_convert.verify.transformers_runner import load_transformers_model

    marker = tmp_path / "remote-code-ran"
    (plain / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    config = json.loads((plain / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (plain / "config.json").write_text(json.dumps(config))
    bake_checkpoint(plain, tmp_path / "out", request(tmp_path))
    baked = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "auto_map" not in baked and not list((tmp_path / "out").glob("*.py"))
    load_transformers_model(tmp_path / "out")
    load_transformers_model(plain)
    assert not marker.exists()
