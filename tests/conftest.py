"""Shared fixtures: tiny seeded checkpoints (built once per session) and the real factor files in ../shared."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_FACTORS = REPO.parent / "shared" / "factors"


@pytest.fixture(scope="session")
def shared_factors() -> Path:
    """../shared/factors, read in place; tests using it skip when it is absent."""
    if not SHARED_FACTORS.is_dir():
        pytest.skip("../shared/factors is not present")
    return SHARED_FACTORS


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory):
    """The demo's four tiny baked checkpoints (L_orig 256 -> 1024), keyed by HF class."""
    from longrope_convert.convert.demo.models import build_demo_models, prepare_workdir

    workdir = prepare_workdir(tmp_path_factory.mktemp("demo") / "work")
    return {m.hf_class: m for m in build_demo_models(workdir)}


@pytest.fixture(scope="session")
def llama_model(demo_models):
    return demo_models["LlamaForCausalLM"]


def cli_result(argv, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process on `argv` (paths welcome): exit code, stdout, stderr."""
    from longrope_convert.convert.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder`, to prove inputs are untouched."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def expect_known_transformers_divergence(request, folder: Path, length: int) -> None:
    """Mark the running test as an expected failure (strict: it must still fail) where verify/divergences.py
    documents that the installed transformers departs from the reference (PhiMoE's long factors on 5.x)."""
    import transformers
    from longrope_convert.formats.hf.checkpoint import open_checkpoint
    from longrope_convert.verify.cases import Case
    from longrope_convert.verify.divergences import transformers_divergence

    checkpoint = open_checkpoint(folder)
    cause = transformers_divergence(checkpoint.arch.hf_class, transformers.__version__, checkpoint.require_spec(),
                                    Case("probe", length))
    if cause:
        request.applymarker(pytest.mark.xfail(reason=cause, strict=True))
