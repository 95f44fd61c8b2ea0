"""Baked configs give the same cos/sin in transformers 4.57 (side environment) as in 5.x and as our spec."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from longrope_convert.formats.architectures import ARCHITECTURES
from longrope_convert.formats.hf.config import read_config, spec_from_config
from longrope_convert.verify.cases import Case
from longrope_convert.verify.divergences import transformers_divergence
from longrope_convert.verify.transformers_runner import (
    load_transformers_model,
    rotary_cos_sin,
)

REPO = Path(__file__).resolve().parents[2]
TF4_PATH = Path(os.environ.get("LONGROPE_TF4_PATH", REPO / ".venv-compat" / "tf4"))
PROBE = REPO / "tests" / "compat_probe.py"
LENGTHS = (200, 256, 257, 600)

pytestmark = pytest.mark.compat


def probe(folder: Path, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(PROBE), str(folder), *map(str, LENGTHS)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", tuple(ARCHITECTURES))
def test_same_cos_sin_in_transformers_4_and_5(demo_models, arch):
    if not (TF4_PATH / "transformers").is_dir():
        pytest.skip(f"transformers 4.x side environment not installed at {TF4_PATH} (scripts/test.sh makes it)")
    folder = demo_models[arch].baked
    old = probe(folder, TF4_PATH)
    assert old["transformers"].startswith("4.")
    spec = spec_from_config(read_config(folder))
    model5 = load_transformers_model(folder)
    if old["attention_scaling"] is not None:  # 4.x PhiMoE keeps per-set mscales instead of one scaling
        assert old["attention_scaling"] == pytest.approx(spec.attention_factor, rel=1e-12)
    for length in LENGTHS:
        cos4 = torch.tensor(old[str(length)]["cos"], dtype=torch.float64)
        sin4 = torch.tensor(old[str(length)]["sin"], dtype=torch.float64)
        cos5, sin5 = (t.double() for t in rotary_cos_sin(model5, length))
        same = torch.allclose(cos4, cos5, atol=1e-6) and torch.allclose(sin4, sin5, atol=1e-6)
        # where verify/divergences.py documents that 5.x departs (PhiMoE long factors), it must still depart
        assert same != bool(transformers_divergence(arch, transformers.__version__, spec, Case("c", length)))
        expected = spec.factor_set_for_length(length)
        cos_ref, _ = spec.cos_sin(torch.arange(length), expected)
        cos_wrong, _ = spec.cos_sin(torch.arange(length), expected.other())
        assert (cos4 - cos_ref).abs().max() < 2e-4
        assert (cos4 - cos_wrong).abs().max() > 1e-2
