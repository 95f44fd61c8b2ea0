"""What a first run meets: options after the verb, the first bake error on a plain checkpoint, a config excerpt's
context lengths, inspect of a folder vs its config.json, a full disk, a corrupt layer count, and transformers'
`past_key_values` -> `cache` rename."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from ..conftest import cli_result as run_cli
from ..conftest import tree_digest

PHI3_EXCERPT = "phi-3-mini-128k.config-excerpt.json"


@pytest.fixture(scope="module")
def phi3_plain(tmp_path_factory):
    """A tiny plain Phi-3 with Phi-3-mini's rotary dim (96): the shared excerpt's 48 factors fit it."""
    from longrope_convert.convert.demo.tiny_checkpoint import (
        TinyShape,
        write_tiny_checkpoint,
    )

    return write_tiny_checkpoint(tmp_path_factory.mktemp("phi") / "plain", "Phi3ForCausalLM",
                                 TinyShape(head_dim=96, hidden_size=384, num_heads=4, num_kv_heads=4), seed=3)


@pytest.mark.parametrize("flag, expect_log", [("-q", False), ("-v", True)])
def test_log_options_after_the_verb(tmp_path, capsys, llama_model, flag, expect_log):
    code, _, err = run_cli(["bake", llama_model.baked, "-o", tmp_path / "out", flag], capsys)
    assert code == 0, err
    assert ("baked " in err) is expect_log, err


def test_debug_after_the_verb_is_accepted(tmp_path, capsys, llama_model):
    code, _, err = run_cli(["inspect", llama_model.baked, "--debug"], capsys)
    assert code == 0, err


def test_first_bake_of_a_plain_checkpoint_names_the_missing_option(tmp_path, capsys, llama_model):
    code, _, err = run_cli(["bake", llama_model.plain, "-o", tmp_path / "out", "--long-factors",
                            _long_factors(tmp_path)], capsys)
    config = llama_model.plain / "config.json"
    assert code == 2 and err.strip() == (
        f"error: {config} is a plain-RoPE checkpoint trained at 256 tokens (taken as L_orig): pass "
        "--max-position-embeddings M, the extended context the factors were searched for"), err


def _long_factors(folder: Path) -> Path:
    path = folder / "long.csv"
    path.write_text("".join(f"{1 + i * 0.4}\n" for i in range(8)))
    return path


def test_an_excerpt_supplies_its_context_lengths_to_bake(tmp_path, capsys, shared_factors, phi3_plain):
    code, _, err = run_cli(["bake", phi3_plain, "-o", tmp_path / "out", "--long-factors",
                            shared_factors / PHI3_EXCERPT], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["original_max_position_embeddings"], config["max_position_embeddings"]) == (4096, 131072)


def test_options_override_the_excerpt(tmp_path, capsys, shared_factors, phi3_plain):
    code, _, err = run_cli(["bake", phi3_plain, "-o", tmp_path / "out", "--long-factors",
                            shared_factors / PHI3_EXCERPT, "--max-position-embeddings", "65536"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["original_max_position_embeddings"], config["max_position_embeddings"]) == (4096, 65536)


def test_an_excerpt_is_a_reference_spec(tmp_path, capsys, shared_factors, phi3_plain):
    from longrope_convert.formats.artifact_spec import reference_spec
    from longrope_convert.formats.hf.checkpoint import open_checkpoint

    run_cli(["bake", phi3_plain, "-o", tmp_path / "out", "--long-factors", shared_factors / PHI3_EXCERPT], capsys)
    own = open_checkpoint(tmp_path / "out").require_spec()
    spec = reference_spec(shared_factors / PHI3_EXCERPT, own)
    assert spec == own  # the very numbers bake wrote


def test_inspect_plots_an_excerpt(tmp_path, capsys, shared_factors):
    code, out, err = run_cli(["inspect", shared_factors / PHI3_EXCERPT, "--plot", tmp_path / "f.png"], capsys)
    assert code == 0, err
    assert "L_orig 4096, max_position_embeddings 131072, scale s 32" in out
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_of_a_folder_and_of_its_config_agree(capsys, llama_model):
    folder = run_cli(["inspect", llama_model.baked], capsys)
    config = run_cli(["inspect", llama_model.baked / "config.json"], capsys)
    assert folder[0] == config[0] == 0
    assert folder[1].splitlines()[1:] == config[1].splitlines()[1:]  # line 1 names what was inspected
    plain = [run_cli(["inspect", p], capsys) for p in (llama_model.plain, llama_model.plain / "config.json")]
    assert plain[0] == plain[1] and plain[0][0] == 2


def test_a_full_disk_is_exit_2_and_leaves_nothing(tmp_path, capsys, llama_model, monkeypatch):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    src = tmp_path / "src"
    shutil.copytree(llama_model.baked, src)
    before = tree_digest(src)
    monkeypatch.setattr(Path, "write_text", no_space)
    code, _, err = run_cli(["bake", src, "-o", tmp_path / "out"], capsys)
    monkeypatch.undo()
    assert code == 2 and err.strip() == "error: no space left on device; nothing was written at the output path"
    assert sorted(os.listdir(tmp_path)) == ["src"] and tree_digest(src) == before


def test_a_huge_layer_count_is_refused_before_anything_is_sized_by_it(tmp_path, capsys, llama_model, monkeypatch):
    """16M layers (the geometry's own cap) is refused from the tensor names alone: no slot per layer is built."""
    from longrope_convert.formats.architectures import Architecture

    src = tmp_path / "src"
    shutil.copytree(llama_model.baked, src)
    config = json.loads((src / "config.json").read_text())
    config["num_hidden_layers"] = 1 << 24
    (src / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(Architecture, "tensor_slots", lambda *a: pytest.fail("slots built"))
    start = time.perf_counter()
    code, _, err = run_cli(["inspect", src], capsys)
    assert code == 2 and "'num_hidden_layers' is 16777216 but the weights hold 2 layers" in err, err
    assert time.perf_counter() - start < 5


def test_a_decode_step_passes_the_cache_under_this_transformers_name(llama_model):
    """transformers 5.24 warns about `past_key_values=` (and 5.40 drops it): the decode uses `cache=` there,
    `past_key_values=` on 4.x, and no deprecation is printed either way."""
    import inspect as inspect_module

    import torch
    from longrope_convert.verify.target_transformers import (
        TransformersTarget,
        cache_argument,
    )
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(llama_model.baked).eval()
    expected = "cache" if "cache" in inspect_module.signature(type(model).forward).parameters else "past_key_values"
    assert cache_argument(type(model)) == expected
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
            warnings.simplefilter("always")
            steps = TransformersTarget._decode(SimpleNamespace(model=model), torch.arange(1, 11)[None], 8)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert steps.shape == (2, model.config.vocab_size)
    assert not [w for w in caught if issubclass(w.category, FutureWarning) or "past_key_values" in str(w.message)], \
        [str(w.message) for w in caught]
    assert not [r for r in records if "past_key_values" in r.getMessage()]
