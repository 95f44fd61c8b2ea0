"""Inputs confined to the checkpoint (formats/input_paths.py): an HF cache snapshot, whose files are symlinks into
its repository's blobs, works; links leaving the checkpoint (or the cache repository), index entries naming files
outside it, and FIFOs are refused with one line naming the file, before anything opens them. safetensors headers
follow the library's own rules."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from longrope_convert.formats.errors import CheckpointError
from longrope_convert.formats.hf.tensor_index import read_safetensors_header
from longrope_convert.formats.input_paths import confined_file, confinement_root

from ..conftest import tree_digest
from .refusal import run_cli


def hf_cache_snapshot(checkpoint: Path, hub: Path, repo: str = "models--org--tiny") -> Path:
    """`checkpoint` laid out as huggingface_hub's cache does: blobs named by hash, snapshot files linking to
    them with relative `../../blobs/HASH` links."""
    blobs, snapshot = hub / repo / "blobs", hub / repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (hub / repo / "refs").mkdir()
    (hub / repo / "refs" / "main").write_text("0123abcd")
    for f in sorted(checkpoint.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blobs / digest)
        (snapshot / f.name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return snapshot


def test_an_hf_cache_snapshot_converts(tmp_path, capsys, llama_model):
    snapshot = hf_cache_snapshot(llama_model.baked, tmp_path / "hub")
    assert confinement_root(snapshot) == (tmp_path / "hub" / "models--org--tiny").resolve()
    before = tree_digest(tmp_path / "hub")
    code, err = run_cli(["bake", snapshot, "-o", tmp_path / "baked", "--copy-weights"], capsys)
    assert code == 0, err
    baked = tmp_path / "baked"
    assert not any(p.is_symlink() for p in baked.iterdir())  # the blobs' bytes were copied, not the links
    assert (baked / "model.safetensors").read_bytes() == (llama_model.baked / "model.safetensors").read_bytes()
    assert (baked / "tokenizer.model").read_bytes() == (llama_model.baked / "tokenizer.model").read_bytes()
    code, err = run_cli(["hf-to-gguf", snapshot, "-o", tmp_path / "m.gguf", "--outtype", "f32"], capsys)
    assert code == 0, err
    assert tree_digest(tmp_path / "hub") == before


def test_a_snapshot_link_into_another_cache_repository_is_refused(tmp_path, capsys, llama_model):
    """Within the cache, a snapshot may only reach its own repository's blobs."""
    hub = tmp_path / "hub"
    snapshot = hf_cache_snapshot(llama_model.baked, hub)
    other = hf_cache_snapshot(llama_model.baked, hub, "models--other--model")
    link = snapshot / "tokenizer.model"
    link.unlink()
    link.symlink_to(os.path.relpath(other / "tokenizer.model", snapshot))
    code, err = run_cli(["bake", snapshot, "-o", tmp_path / "out"], capsys)
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert f"{link}: is a link to " in err and "outside the checkpoint folder" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("target", ["/etc/hostname", "../outside.safetensors"])
def test_a_weights_link_out_of_a_plain_folder_is_refused(tmp_path, llama_model, target):
    src = tmp_path / "src"
    shutil.copytree(llama_model.baked, src)
    shutil.copyfile(src / "model.safetensors", tmp_path / "outside.safetensors")
    (src / "model.safetensors").unlink()
    (src / "model.safetensors").symlink_to(target)
    with pytest.raises(CheckpointError, match="outside the checkpoint folder"):
        confined_file(src, "model.safetensors")


def test_links_inside_the_checkpoint_are_fine(tmp_path, llama_model):
    src = tmp_path / "src"
    shutil.copytree(llama_model.baked, src)
    (src / "weights").mkdir()
    (src / "model.safetensors").rename(src / "weights" / "real.safetensors")
    (src / "model.safetensors").symlink_to("weights/real.safetensors")
    assert confined_file(src, "model.safetensors") == src / "model.safetensors"


def test_a_fifo_factor_file_is_refused_without_blocking(tmp_path, capsys, llama_model):
    """The refusal comes from stat, before any open: opening a FIFO with no writer would block forever."""
    fifo = tmp_path / "long.csv"
    os.mkfifo(fifo)
    code, err = run_cli(["bake", llama_model.plain, "-o", tmp_path / "out", "--long-factors", fifo,
                         "--max-position-embeddings", "1024"], capsys)
    assert code == 2 and err.strip() == f"error: {fifo}: not a regular file", err


def test_a_dangling_link_is_named(tmp_path, capsys, llama_model):
    src = tmp_path / "src"
    shutil.copytree(llama_model.baked, src)
    (src / "tokenizer.model").unlink()
    (src / "tokenizer.model").symlink_to("gone.model")
    code, err = run_cli(["bake", src, "-o", tmp_path / "out"], capsys)
    assert code == 2 and err.strip() == f"error: {src / 'tokenizer.model'}: is a link to a missing file", err


# --- safetensors headers: the library's rules ---------------------------------------------------------------


def _safetensors(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("offsets, data_len, fragment", [
    ([[0, 16], [8, 24]], 24, "overlaps the tensor before it"),
    ([[0, 16], [20, 36]], 36, "leaves a gap before it"),
    ([[0, 16], [16, 32]], 40, "8 bytes after the last tensor's data"),
])
def test_header_rules_match_the_safetensors_library(tmp_path, offsets, data_len, fragment):
    """Each file the safetensors library refuses (overlap, gap, trailing bytes), our reader refuses too."""
    from safetensors import safe_open

    header = {f"t{i}": {"dtype": "F32", "shape": [4], "data_offsets": o} for i, o in enumerate(offsets)}
    path = _safetensors(tmp_path / "x.safetensors", header, bytes(data_len))
    with pytest.raises(Exception):  # noqa: B017 - safetensors raises its own SafetensorError
        safe_open(str(path), "np")
    with pytest.raises(CheckpointError, match=fragment):
        read_safetensors_header(path)


def test_a_well_formed_header_passes_both(tmp_path):
    from safetensors import safe_open

    header = {"b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]},
              "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "__metadata__": {"k": "v"}}
    path = _safetensors(tmp_path / "x.safetensors", header, bytes(32))
    with safe_open(str(path), "np") as fh:
        assert sorted(fh.keys()) == ["a", "b"]
    assert sorted(i.name for i in read_safetensors_header(path)) == ["a", "b"]


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/hostname", "sub/../../outside.safetensors"])
@pytest.mark.parametrize("command", ["bake", "hf-to-gguf"])
def test_index_paths_outside_the_checkpoint_are_refused(tmp_path, capsys, llama_model, shard, command):
    src = tmp_path / "src"
    shutil.copytree(llama_model.baked, src)
    (tmp_path / "outside.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": shard}}))
    before = tree_digest(tmp_path)
    out = tmp_path / ("out.gguf" if command == "hf-to-gguf" else "out")
    code, err = run_cli([command, src, "-o", out], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "plain file names" in lines[0], lines
    assert tree_digest(tmp_path) == before and not out.exists()
