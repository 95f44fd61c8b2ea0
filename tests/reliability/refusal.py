"""The one check every refusal must pass: exit 2, one `error:` line naming the file and problem, no traceback,
nothing new at the output path, inputs byte-identical."""

from __future__ import annotations

import errno
from pathlib import Path

from ..conftest import cli_result, tree_digest
from .corpus import Setup


def run_cli(argv: list, capsys) -> tuple[int, str]:
    """Exit code and stderr of the CLI run in-process."""
    code, _, err = cli_result(argv, capsys)
    return code, err


def _snapshot(path: Path):
    try:
        if path.is_dir():
            return tree_digest(path)
        return path.read_bytes() if path.is_file() else None
    except OSError as exc:  # a name too long to exist cannot hold anything
        if exc.errno == errno.ENAMETOOLONG:
            return None
        raise


def assert_refused(s: Setup, argv: list[str], capsys, named, fragment: str) -> None:
    out_before = _snapshot(s.out)
    src_before = _snapshot(s.src)
    factors_before = _snapshot(s.long_factors)
    code, err = run_cli(argv, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert str(named) in errors[0] and fragment in errors[0], errors[0]
    assert _snapshot(s.src) == src_before and _snapshot(s.long_factors) == factors_before
    assert _snapshot(s.out) == out_before  # None stays None: nothing appeared at the output path
    if s.out.parent.exists():
        assert not list(s.out.parent.glob(f".{s.out.name}.partial-*"))
