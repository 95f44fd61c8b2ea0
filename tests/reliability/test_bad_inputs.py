"""Every hostile input gives exit 2, one `error:` line naming the file and problem, no traceback,
nothing at the output path, and byte-identical inputs."""

from __future__ import annotations

import pytest

from longrope_convert.convert.cli import main

from ..conftest import tree_digest
from .corpus import CASES, COMMANDS, Setup

PAIRS = [(cmd, case) for cmd in COMMANDS for case in CASES if case.kind in cmd.kinds]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command, case", PAIRS, ids=[f"{c.name}-{k.name}" for c, k in PAIRS])
def test_bad_input_is_refused_cleanly(tmp_path, capsys, command, case, demo_models):
    baked = demo_models["LlamaForCausalLM"].baked if command.needs_baked else None
    setup = Setup.make(tmp_path, baked)
    named, fragment = case.apply(setup)
    out_existed = setup.out.exists()
    before_src = tree_digest(setup.src) if setup.src.exists() else {}
    before_factors = setup.long_factors.read_bytes()
    before_out = tree_digest(setup.out) if out_existed and setup.out.is_dir() else None

    code, err = run_cli(command.argv(setup) + setup.extra_args, capsys)

    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert len(errors) == 1, err
    assert str(named) in errors[0] and fragment in errors[0], errors[0]
    assert "Traceback" not in err
    assert tree_digest(setup.src) == before_src
    assert setup.long_factors.read_bytes() == before_factors
    if out_existed:
        assert before_out is None or tree_digest(setup.out) == before_out
    else:
        assert not setup.out.exists()
    assert not list(setup.out.parent.glob(f".{setup.out.name}.partial-*")) if setup.out.parent.exists() else True
