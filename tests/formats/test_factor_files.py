import json

import numpy as np
import pytest
from longrope_convert.formats.errors import FactorFileError
from longrope_convert.formats.factor_files import read_factor_file, validate_factors, warn_on_unusual
from longrope_convert.formats.factor_set import FactorSet


def test_result_final_csv_one_value_per_line(shared_factors):
    contents = read_factor_file(shared_factors / "longrope-llama2-7b-128k.result_final.csv")
    assert len(contents.unnamed) == 64
    assert contents.unnamed[0] == 1.0
    assert validate_factors(contents.unnamed, "f", 64, "rotary dim 128").values == contents.unnamed


def test_per_layer_matrix_collapses_to_the_same_vector(shared_factors):
    lines = read_factor_file(shared_factors / "longrope-llama2-7b-128k.result_final.csv").unnamed
    matrix = read_factor_file(shared_factors / "longrope-llama2-7b-128k.per-layer.csv").unnamed
    assert matrix == pytest.approx(lines, rel=1e-15)


def test_phi3_config_excerpt_fills_both_sets(shared_factors):
    contents = read_factor_file(shared_factors / "phi-3-mini-128k.config-excerpt.json")
    assert len(contents.long) == 48 and len(contents.short) == 48
    assert contents.vector_for(FactorSet.LONG)[0] == pytest.approx(1.07, abs=1e-6)
    assert contents.vector_for(FactorSet.SHORT) != contents.vector_for(FactorSet.LONG)


@pytest.mark.parametrize("key, kind", [("rope_scaling", "su"), ("rope_parameters", "longrope")])
def test_hf_config_variants(tmp_path, key, kind):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({key: {"type": kind, "long_factor": [1, 2], "short_factor": [1, 1.5]}}))
    contents = read_factor_file(path)
    assert contents.long == (1.0, 2.0) and contents.short == (1.0, 1.5)


def test_json_list_and_npy(tmp_path):
    (tmp_path / "f.json").write_text("[1.0, 2.5, 3]")
    assert read_factor_file(tmp_path / "f.json").unnamed == (1.0, 2.5, 3.0)
    np.save(tmp_path / "f.npy", np.array([1.0, 2.0, 4.0]))
    assert read_factor_file(tmp_path / "f.npy").unnamed == (1.0, 2.0, 4.0)
    np.save(tmp_path / "m.npy", np.ones((3, 4)))
    assert read_factor_file(tmp_path / "m.npy").unnamed == (1.0,) * 4


def test_npy_with_objects_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FactorFileError, match="npy"):
        read_factor_file(tmp_path / "o.npy")


def test_space_padded_matrix(tmp_path):
    (tmp_path / "m.csv").write_text(" 1.0000000000000000, 2.0000000000000000\n 1.0000000000000000, 2.0000000000000000\n")
    assert read_factor_file(tmp_path / "m.csv").unnamed == (1.0, 2.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("1.0\nabc\n", "line 2: 'abc' is not a number"),
        ("1,2\n1,3\n", "row 2 differs"),
        ("1,2\n1,2,3\n", "ragged"),
        ("{not json", "not valid JSON"),
        ('{"rope_scaling": {"type": "linear", "factor": 2}}', "not 'longrope'"),
        ('{"rope_scaling": {"type": "longrope", "long_factor": ["a"]}}', "not a number"),
    ],
)
def test_malformed_files_give_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(FactorFileError, match=message) as info:
        read_factor_file(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_and_oversized_files(tmp_path):
    with pytest.raises(FactorFileError, match="not found"):
        read_factor_file(tmp_path / "nope.txt")
    big = tmp_path / "big.txt"
    with big.open("w") as fh:
        fh.write("1.0\n" * 300_000)
    with pytest.raises(FactorFileError, match="byte limit"):
        read_factor_file(big)


@pytest.mark.parametrize(
    "values, message",
    [
        ((1.0, float("nan"), 1.0, 1.0), "value 1 is nan"),
        ((1.0, float("inf"), 1.0, 1.0), "finite"),
        ((1.0, -1.0, 1.0, 1.0), "> 0"),
        ((1.0, 0.0, 1.0, 1.0), "> 0"),
        ((1.0, 1.0, 1.0), "has 3 values, expected 4 \\(rotary dim 8 from head_dim 8 / 2\\)"),
    ],
)
def test_invalid_values(values, message):
    with pytest.raises(FactorFileError, match=message):
        validate_factors(values, "f.txt", 4, "rotary dim 8 from head_dim 8")


def test_search_prefix_needs_the_option():
    with pytest.raises(FactorFileError, match="--strip-search-prefix"):
        validate_factors((3.0, 1.0, 1.0, 2.0, 2.0), "f", 4, "rotary dim 8")
    stripped = validate_factors((3.0, 1.0, 1.0, 2.0, 2.0), "f", 4, "rotary dim 8", strip_search_prefix=True)
    assert stripped.values == (1.0, 1.0, 2.0, 2.0) and stripped.start_tokens == 3
    two = validate_factors((7.0, 9.0, 1.0, 1.0, 2.0, 2.0), "f", 4, "rotary dim 8", strip_search_prefix=True)
    assert two.values == (1.0, 1.0, 2.0, 2.0) and two.start_tokens == 0


def test_unusual_values_warn_but_are_accepted():
    warnings = warn_on_unusual((0.9, 3.0, 2.0, 600.0), "f", "long factors", nominal_scale=32)
    assert len(warnings) == 3
    assert any("below 1.0" in w for w in warnings)
    assert any("monotone" in w for w in warnings)
    assert any("nominal scale" in w for w in warnings)
    assert warn_on_unusual((1.0, 2.0, 4.0), "f", "long factors", nominal_scale=4) == []
