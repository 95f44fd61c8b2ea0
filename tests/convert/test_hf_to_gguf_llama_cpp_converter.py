"""Our GGUF against what llama.cpp's own converter (convert_hf_to_gguf.py from the llama-cpp-python sdist) writes.

Phi-3: same tensors, same bytes, same llama.cpp keys; the differences are the deliberate ones listed in
docs/gguf.md. LLaMA: llama.cpp's converter drops the LongRoPE factors (FACTS.md); ours keeps them.
Skips when the sdist is not unpacked (set LONGROPE_LLAMA_CPP_SRC to its vendor/llama.cpp folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from longrope_convert.formats.gguf.reader import field_value
from longrope_convert.formats.gguf.spec_keys import PREFIX

from .gguf_fixtures import converted, gguf_models, gguf_out

__all__ = ["gguf_models", "gguf_out"]
LLAMA_CPP_SRC = Path(os.environ.get("LONGROPE_LLAMA_CPP_SRC",
                                    "/tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp"))
# keys llama.cpp's converter derives from the model card / folder name / parameter count, which we do not
DELIBERATE = {"general.name", "general.size_label", "general.tags", "general.basename", "general.finetune",
              "general.license", "general.version"}


@pytest.fixture(scope="module")
def llama_cpp_converter() -> Path:
    script = LLAMA_CPP_SRC / "convert_hf_to_gguf.py"
    if not script.is_file():
        pytest.skip(f"llama.cpp converter not found at {script}")
    return script


def run_llama_cpp_converter(script: Path, src: Path, out: Path) -> Path:
    proc = subprocess.run([sys.executable, str(script), str(src), "--outfile", str(out), "--outtype", "f32"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def read(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    kv = {k: field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return kv, {t.name: t for t in reader.tensors}


def test_phi3_matches_llama_cpp_converter_except_deliberate_differences(
        gguf_models, gguf_out, tmp_path, llama_cpp_converter):
    baked = gguf_models["Phi3ForCausalLM"]
    theirs_kv, theirs_t = read(run_llama_cpp_converter(llama_cpp_converter, baked, tmp_path / "theirs.gguf"))
    ours_kv, ours_t = read(converted(baked, gguf_out, "f32", "pair"))
    differing = {k for k in set(ours_kv) | set(theirs_kv) if ours_kv.get(k) != theirs_kv.get(k)}
    ours_only = {k for k in differing if k.startswith(PREFIX + ".")}
    assert ours_only == {k for k in ours_kv if k.startswith(PREFIX + ".")}
    assert differing - ours_only <= DELIBERATE, sorted(differing - ours_only)
    for key in ("phi3.rope.scaling.attn_factor", "phi3.rope.scaling.original_context_length",
                "phi3.rope.dimension_count", "phi3.context_length", "tokenizer.ggml.tokens"):
        assert ours_kv[key] == theirs_kv[key], key
    assert set(ours_t) == set(theirs_t)
    for name, t in ours_t.items():
        assert (t.tensor_type, list(t.shape)) == (theirs_t[name].tensor_type, list(theirs_t[name].shape)), name
        np.testing.assert_array_equal(t.data, theirs_t[name].data, err_msg=name)


def test_llama_cpp_converter_drops_llama_longrope_factors_and_we_do_not(
        gguf_models, gguf_out, tmp_path, llama_cpp_converter):
    baked = gguf_models["LlamaForCausalLM"]
    theirs_kv, theirs_t = read(run_llama_cpp_converter(llama_cpp_converter, baked, tmp_path / "theirs.gguf"))
    ours_kv, ours_t = read(converted(baked, gguf_out, "f32", "pair"))
    factor_tensors = {"rope_factors_long.weight", "rope_factors_short.weight"}
    assert not factor_tensors & set(theirs_t)
    assert "llama.rope.scaling.attn_factor" not in theirs_kv
    assert factor_tensors <= set(ours_t)
    assert ours_kv["llama.rope.scaling.attn_factor"] > 1.0
    for name, t in theirs_t.items():  # the weights themselves (incl. the Q/K permutation) agree
        np.testing.assert_array_equal(ours_t[name].data, t.data, err_msg=name)
