"""Property tests: every layout round-trips, bake -> config import is lossless, any valid vector is accepted."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from longrope_convert.convert.bake import bake_checkpoint
from longrope_convert.convert.demo.tiny_checkpoint import write_tiny_checkpoint
from longrope_convert.formats.factor_files import read_factor_file, validate_factors
from longrope_convert.formats.factor_set import FactorSet
from longrope_convert.formats.hf.config import read_config, spec_from_config
from longrope_convert.formats.spec import LongRopeSpec
from longrope_convert.formats.spec_inputs import SpecRequest

positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
vectors = st.lists(positive, min_size=1, max_size=64).map(tuple)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _lines(v, d):
    (d / "f.csv").write_text("".join(f"{x:.18e}\n" for x in v))
    return d / "f.csv"


def _matrix(v, d):
    row = ",".join(f"{x:16.16f}" if x >= 1e-3 else repr(x) for x in v)
    (d / "m.csv").write_text("\n".join([" " + row] * 3) + "\n")
    return d / "m.csv"


def _json_list(v, d):
    (d / "f.json").write_text(json.dumps(list(v)))
    return d / "f.json"


def _config(v, d):
    rope = {"type": "su", "long_factor": list(v), "short_factor": list(v)}
    (d / "config.json").write_text(json.dumps({"rope_scaling": rope}))
    return d / "config.json"


def _npy(v, d):
    np.save(d / "f.npy", np.array(v, dtype=np.float64))
    return d / "f.npy"


LAYOUTS = {"lines": _lines, "matrix": _matrix, "json": _json_list, "config": _config, "npy": _npy}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@SETTINGS
@given(values=vectors)
def test_every_layout_round_trips(layout, values):
    assume(layout != "matrix" or len(values) >= 2)  # a one-column matrix *is* the one-value-per-line layout
    with tempfile.TemporaryDirectory() as d:
        path = LAYOUTS[layout](values, Path(d))
        got = read_factor_file(path).vector_for(FactorSet.LONG)
    if layout == "matrix":  # %16.16f keeps 16 decimals, as the published files do
        assert got == pytest.approx(values, rel=1e-12, abs=1e-16)
    else:
        assert got == values


@SETTINGS
@given(values=st.lists(positive, min_size=8, max_size=8).map(tuple))
def test_any_finite_positive_vector_of_the_right_length_is_accepted(values):
    assert validate_factors(values, "f", 8, "rotary dim 16").values == values
    spec = LongRopeSpec(values, values, 256, 1024, 10000.0, 16)
    assert all(f > 0 for f in spec.inv_freq_list(FactorSet.LONG))


@pytest.fixture(scope="module")
def plain_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    return {name: write_tiny_checkpoint(root / name, name, seed=1) for name in ("LlamaForCausalLM", "Phi3ForCausalLM")}


@SETTINGS
@given(
    long=st.lists(st.floats(min_value=0.5, max_value=600, allow_nan=False), min_size=8, max_size=8).map(tuple),
    short=st.lists(st.floats(min_value=0.5, max_value=4, allow_nan=False), min_size=8, max_size=8).map(tuple),
    max_pos=st.integers(min_value=257, max_value=1 << 21),
    attention=st.one_of(st.none(), st.floats(min_value=0.5, max_value=4)),
    arch=st.sampled_from(["LlamaForCausalLM", "Phi3ForCausalLM"]),
)
def test_bake_then_import_gives_back_the_same_spec(plain_checkpoints, long, short, max_pos, attention, arch):
    if arch == "Phi3ForCausalLM":
        attention = None  # Phi-3 configs cannot carry an explicit attention factor for 4.x
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _lines(long, d).rename(d / "long.csv")
        (d / "short.json").write_text(json.dumps(list(short)))
        request = SpecRequest(long_factors=d / "long.csv", short_factors=d / "short.json",
                              max_position_embeddings=max_pos, attention_factor=attention)
        baked = bake_checkpoint(plain_checkpoints[arch], d / "out", request)
        imported = spec_from_config(read_config(d / "out"))
    assert imported == baked.spec
    assert imported.long_factor == long and imported.short_factor == short
    assert imported.attention_factor == pytest.approx(baked.spec.attention_factor, rel=1e-15)
