"""A conversion killed at a random point (SIGINT or SIGKILL) never leaves anything at the output path,
and a re-run succeeds."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longrope_convert.formats.hf_config import read_config, spec_from_config

BIG_BYTES = 128 * 1024 * 1024


def _big_checkpoint(root: Path, demo_baked: Path) -> Path:
    """The demo's config with one extra ~256 MB tensor, so copying takes long enough to interrupt."""
    import torch
    from safetensors.torch import load_file, save_file

    src = root / "src"
    src.mkdir()
    (src / "config.json").write_text((demo_baked / "config.json").read_text())
    tensors = load_file(str(demo_baked / "model.safetensors"))
    tensors["zz_padding.weight"] = torch.zeros(BIG_BYTES // 4, dtype=torch.float32)
    save_file(tensors, str(src / "model.safetensors"))
    return src


def _bake_cmd(src: Path, out: Path, force: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "longrope_convert.convert", "bake", str(src), "-o", str(out), "--copy-weights"]
    return cmd + (["--force"] if force else [])


def _assert_absent_or_complete(out: Path) -> bool:
    if not out.exists():
        return False
    spec = spec_from_config(read_config(out))
    assert spec is not None and spec.max_position_embeddings == 1024
    assert (out / "model.safetensors").stat().st_size > BIG_BYTES
    return True


@pytest.fixture(scope="module")
def big_src(tmp_path_factory, demo_models):
    return _big_checkpoint(tmp_path_factory.mktemp("big"), demo_models["LlamaForCausalLM"].baked)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_bake_leaves_nothing_and_rerun_succeeds(tmp_path, big_src, sig):
    start = time.perf_counter()
    subprocess.run(_bake_cmd(big_src, tmp_path / "timing"), check=True, capture_output=True)
    full = time.perf_counter() - start
    rng = random.Random(int(sig))
    for attempt in range(2):
        out = tmp_path / f"out{attempt}"
        proc = subprocess.Popen(_bake_cmd(big_src, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 0.9) * full)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        finished = _assert_absent_or_complete(out)
        if sig == signal.SIGINT and not finished:
            assert proc.returncode == 130 and "Traceback" not in err
            assert not list(tmp_path.glob(f".{out.name}.partial-*"))  # cleaned up on SIGINT
        rerun = subprocess.run(_bake_cmd(big_src, out, force=finished), capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        assert _assert_absent_or_complete(out)
        assert json.loads((out / "config.json").read_text())["rope_scaling"]["type"] == "longrope"
