"""Every hostile input in the corpus, against every command that reads that kind of input."""

from __future__ import annotations

import pytest

from .corpus import CASES, COMMANDS, Setup
from .refusal import assert_refused

PAIRS = [(cmd, case) for cmd in COMMANDS for case in CASES if case.kind in cmd.kinds]


@pytest.mark.parametrize("command, case", PAIRS, ids=[f"{c.name}-{k.name}" for c, k in PAIRS])
def test_bad_input_is_refused_cleanly(tmp_path, capsys, command, case, demo_models):
    setup = Setup.make(tmp_path, demo_models["LlamaForCausalLM"].baked if command.needs_baked else None)
    named, fragment = case.apply(setup)
    assert_refused(setup, command.argv(setup) + setup.extra_args, capsys, named, fragment)
