"""Every hostile input in the corpus, against every command that reads that kind of input."""

from __future__ import annotations

import pytest
from longrope_convert.convert.cli import main

from .corpus import CASES, COMMANDS, Setup
from .refusal import assert_refused

PAIRS = [(cmd, case) for cmd in COMMANDS for case in CASES if case.kind in cmd.kinds]


@pytest.fixture(scope="module")
def good_gguf(demo_models, tmp_path_factory):
    """An f32 GGUF of the tiny baked LLaMA, for the cases that break a GGUF (built once, copied per case)."""
    out = tmp_path_factory.mktemp("gguf") / "model.gguf"
    with pytest.raises(SystemExit) as exit_info:
        main(["-q", "hf-to-gguf", str(demo_models["LlamaForCausalLM"].baked), "-o", str(out), "--outtype", "f32"])
    assert exit_info.value.code == 0
    return out


@pytest.mark.parametrize("command, case", PAIRS, ids=[f"{c.name}-{k.name}" for c, k in PAIRS])
def test_bad_input_is_refused_cleanly(tmp_path, capsys, request, command, case, demo_models):
    gguf = request.getfixturevalue("good_gguf") if case.kind == "gguf" else None
    setup = Setup.make(tmp_path, demo_models["LlamaForCausalLM"].baked if command.needs_baked else None, gguf)
    named, fragment = case.apply(setup)
    assert_refused(setup, command.argv(setup) + setup.extra_args, capsys, named, fragment)
