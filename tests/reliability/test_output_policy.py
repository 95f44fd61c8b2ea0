"""One output policy for every file any command writes (formats/atomic_output.py): refusals exit 2 with one
`error:` line naming the path, leave nothing at or beside the output and the inputs byte-identical; accepted
outputs appear whole, with ordinary permissions, and replace only what --force allows."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ..conftest import tree_digest
from .refusal import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def src(demo_models) -> Path:
    """A tiny baked checkpoint (read-only for these tests: every case checks it stays byte-identical)."""
    return demo_models["LlamaForCausalLM"].baked


def snapshot(path: Path):
    """What sits at `path` itself: a link's target text, a folder's digests, a file's bytes, a node's type."""
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_dir():
        return ("dir", tree_digest(path))
    if path.is_file():
        return ("file", path.read_bytes())
    return ("mode", stat.S_IFMT(os.lstat(path).st_mode)) if os.path.lexists(path) else None


def assert_refused(argv: list[str], out: Path, src: Path, capsys, fragment: str = "") -> str:
    """Exit 2, exactly one `error:` line naming `out`, and nothing changed at, beside or inside the inputs."""
    folder_before = sorted(os.listdir(out.parent))
    out_before, src_before = snapshot(out), tree_digest(src)
    code, err = run_cli(argv, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert str(out) in errors[0] and fragment in errors[0], errors[0]
    assert snapshot(out) == out_before
    assert sorted(os.listdir(out.parent)) == folder_before  # no `.NAME.partial-*` or `.NAME.old-*` left beside it
    assert tree_digest(src) == src_before
    return errors[0]


def assert_nothing_beside(out: Path) -> None:
    assert not [p for p in os.listdir(out.parent) if ".partial-" in p or ".old-" in p]


# --- refusals -------------------------------------------------------------------------------------------------


def test_json_to_a_device_node_is_refused(tmp_path, src, capsys):
    """`verify --json /dev/null` as root used to replace the device node; a private copy of it stands in for
    /dev/null here, so a regression cannot damage the machine running the tests."""
    if os.geteuid() != 0:
        pytest.skip("only root can replace a device node")
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("this container does not allow mknod")
    assert_refused(["verify", src, "--json", node], node, src, capsys, "not a regular file or folder")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_junit_to_a_fifo_is_refused(tmp_path, src, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_refused(["verify", src, "--junit", fifo], fifo, src, capsys, "not a regular file or folder")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_json_to_a_link_into_the_input_is_refused(tmp_path, src, capsys):
    link = tmp_path / "report.json"
    link.symlink_to(src / "config.json")
    assert_refused(["verify", src, "--json", link], link, src, capsys)


def test_force_over_a_hard_link_replaces_the_link_never_writes_through_it(tmp_path, src, capsys):
    """OUT is a second name of a file inside SRC: --force swaps the name over, the input's bytes stay."""
    link = tmp_path / "out.gguf"
    try:
        os.link(src / "config.json", link)
    except OSError:
        pytest.skip("hard links are not possible here")
    src_before = tree_digest(src)
    code, err = run_cli(["hf-to-gguf", src, "-o", link, "--no-vocab", "--force"], capsys)
    assert code == 0, err
    assert link.read_bytes()[:4] == b"GGUF" and tree_digest(src) == src_before
    assert os.stat(src / "config.json").st_nlink == 1
    assert_nothing_beside(link)


def test_file_output_never_replaces_a_folder_even_with_force(tmp_path, src, capsys):
    out = tmp_path / "out.gguf"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert_refused(["hf-to-gguf", src, "-o", out, "--no-vocab", "--force"], out, src, capsys, "is a folder")


def test_folder_output_never_replaces_a_file_even_with_force(tmp_path, src, capsys):
    out = tmp_path / "baked"
    out.write_text("keep me")
    assert_refused(["bake", src, "-o", out, "--force"], out, src, capsys, "is a file")


def test_failed_replace_puts_the_old_output_back(tmp_path, src, capsys, monkeypatch):
    """The 1st rename moves the old output aside, the 2nd (temp -> OUT) fails: the old one must come back."""
    out = tmp_path / "baked"
    out.mkdir()
    (out / "old.txt").write_text("the previous output")
    real_rename, calls = os.rename, []

    def flaky_rename(a, b, *args, **kwargs):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real_rename(a, b, *args, **kwargs)

    monkeypatch.setattr(os, "rename", flaky_rename)
    assert_refused(["bake", src, "-o", out, "--force"], out, src, capsys, "old output was kept")
    assert len(calls) == 3  # aside, failed replace, put back


def test_newline_in_the_output_path_still_gives_one_error_line(tmp_path, src, capsys):
    """A hostile output name can neither split the error line nor hide terminal escapes in it."""
    out = tmp_path / "no\nsuch" / "out\x1b[2J"
    src_before = tree_digest(src)
    code, err = run_cli(["bake", src, "-o", out], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert repr(str(out)) in err and "\x1b" not in err, err
    assert os.listdir(tmp_path) == [] and tree_digest(src) == src_before


# --- inspect --plot -------------------------------------------------------------------------------------------


@pytest.fixture
def needs_matplotlib():
    pytest.importorskip("matplotlib")


def test_plot_over_an_existing_file_needs_force(tmp_path, src, capsys, needs_matplotlib):
    png = tmp_path / "plot.png"
    png.write_bytes(b"my own picture")
    assert_refused(["inspect", src, "--plot", png], png, src, capsys, "--force")
    code, err = run_cli(["inspect", src, "--plot", png, "--force"], capsys)
    assert code == 0, err
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert_nothing_beside(png)


def test_plot_inside_the_inspected_folder_is_refused(src, capsys, needs_matplotlib):
    png = src / "plot.png"
    assert_refused(["inspect", src, "--plot", png, "--force"], png, src, capsys, "inside the input")
    assert not png.exists()


def test_plot_replaces_a_link_itself_never_its_target(tmp_path, src, capsys, needs_matplotlib):
    target = tmp_path / "elsewhere.png"
    target.write_bytes(b"not ours to touch")
    link = tmp_path / "plot.png"
    link.symlink_to(target)
    code, err = run_cli(["inspect", src, "--plot", link, "--force"], capsys)
    assert code == 0, err
    assert not link.is_symlink() and link.read_bytes().startswith(PNG_MAGIC)
    assert target.read_bytes() == b"not ours to touch"


# --- accepted outputs -----------------------------------------------------------------------------------------


def test_250_character_output_names_work_and_can_be_replaced(tmp_path, src, capsys):
    out = tmp_path / ("b" * 250)
    for argv in (["bake", src, "-o", out], ["bake", src, "-o", out, "--force"]):
        code, err = run_cli(argv, capsys)
        assert code == 0, err
        assert (out / "config.json").is_file()
        assert_nothing_beside(out)
    gguf = tmp_path / ("g" * 245 + ".gguf")
    for argv in (["hf-to-gguf", src, "-o", gguf, "--no-vocab"], ["hf-to-gguf", src, "-o", gguf, "--no-vocab", "--force"]):
        code, err = run_cli(argv, capsys)
        assert code == 0, err
    assert gguf.read_bytes()[:4] == b"GGUF"
    assert_nothing_beside(gguf)


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_outputs_get_ordinary_permissions_under_the_umask(tmp_path, src, capsys, umask, folder_mode, file_mode):
    old = os.umask(umask)
    try:
        assert run_cli(["bake", src, "-o", tmp_path / "baked"], capsys)[0] == 0
        assert run_cli(["hf-to-gguf", src, "-o", tmp_path / "out.gguf", "--no-vocab"], capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "baked").st_mode) == folder_mode
    assert stat.S_IMODE(os.stat(tmp_path / "baked" / "config.json").st_mode) == file_mode
    assert stat.S_IMODE(os.stat(tmp_path / "out.gguf").st_mode) == file_mode
