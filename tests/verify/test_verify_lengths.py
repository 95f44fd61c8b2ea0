"""--lengths past max_position_embeddings is refused (exit 2, one line) before anything heavy loads, unless
--allow-beyond-max; absurd lengths are refused even then. The demo models have max_position_embeddings 1024."""

from __future__ import annotations

import time

import pytest
from longrope_convert.convert.cli import main
from longrope_convert.formats.errors import LongRopeError
from longrope_convert.verify import runner
from longrope_convert.verify.cases import MAX_CASE_TOKENS, CaseSpecError, parse_lengths
from longrope_convert.verify.reference_run import ReferenceRunner

MAX_POS = 1024


class Reached(LongRopeError):
    """Raised where verify would start loading targets: the length check let the run through."""


@pytest.fixture(scope="module")
def llama(demo_models):
    return demo_models["LlamaForCausalLM"].baked


@pytest.fixture
def heavy(monkeypatch):
    """Record (and stop) any attempt to open a target or build the reference."""
    calls = []

    def open_target(request, context):
        calls.append(("target", request.kind))
        raise Reached("opening targets")

    def reference_init(self, *args, **kwargs):
        calls.append(("reference",))
        raise AssertionError("the reference must not be built")

    monkeypatch.setattr(runner, "open_target", open_target)
    monkeypatch.setattr(ReferenceRunner, "__init__", reference_init)
    return calls


def run_verify(args: list[str], capsys) -> tuple[int, list[str], float, str]:
    """Exit code, the stderr lines starting with 'error:', seconds taken, and the whole stderr."""
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *args])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, [line for line in err.splitlines() if line.startswith("error:")], seconds, err


@pytest.mark.parametrize("lengths, covered", [("200,1025", 1025), ("1000+25", 1025), ("4096", 4096)])
def test_beyond_max_positions_is_refused_before_loading(llama, heavy, capsys, lengths, covered):
    code, errors, seconds, _ = run_verify([str(llama), "--lengths", lengths], capsys)
    assert code == 2 and len(errors) == 1
    assert f"covers {covered} tokens" in errors[0]
    assert f"max_position_embeddings {MAX_POS}" in errors[0] and "--allow-beyond-max" in errors[0]
    assert heavy == [] and seconds < 5


def test_allow_beyond_max_lets_the_case_through(llama, heavy, capsys):
    code, errors, _, err = run_verify([str(llama), "--lengths", "200,1025", "--allow-beyond-max"], capsys)
    assert code == 2 and errors == ["error: opening targets"]  # past the length check, stopped by the stub
    assert heavy == [("target", "transformers")]
    assert "warning: --lengths 1025 goes beyond max_position_embeddings 1024" in err


@pytest.mark.parametrize("lengths", [str(MAX_CASE_TOKENS + 1), f"{MAX_CASE_TOKENS}+1", "9" * 40, "1" * 5000])
def test_absurd_lengths_are_refused_even_when_allowed(llama, heavy, capsys, lengths):
    code, errors, seconds, _ = run_verify([str(llama), "--lengths", lengths, "--allow-beyond-max"], capsys)
    assert code == 2 and len(errors) == 1
    assert f"{MAX_CASE_TOKENS}-token limit" in errors[0] and len(errors[0]) < 400
    assert heavy == [] and seconds < 5


def test_parse_lengths_limits():
    assert [c.length for c in parse_lengths("1024,1000+24", 256, MAX_POS)] == [1024, 1024]  # the edge is fine
    assert parse_lengths("1025", 256)[0].prefill == 1025  # no maximum given: no check (as before)
    assert parse_lengths("2048", 256, MAX_POS, allow_beyond_max=True)[0].name == "long"
    assert parse_lengths("0000200", 256, MAX_POS)[0].prefill == 200  # leading zeros are not "absurd"
    with pytest.raises(CaseSpecError, match="max_position_embeddings 1024"):
        parse_lengths("200,1025", 256, MAX_POS)
    with pytest.raises(CaseSpecError, match="token limit"):
        parse_lengths(str(MAX_CASE_TOKENS + 1), 256, None, allow_beyond_max=True)
    with pytest.raises(CaseSpecError, match="token limit"):
        parse_lengths(f"{MAX_CASE_TOKENS}+1", 256)  # the limit counts prefill + steps
