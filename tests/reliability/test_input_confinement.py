"""An index cannot make bake or hf-to-gguf read outside the checkpoint, and bake never writes through a link."""

import json
import shutil

import pytest
from longrope_convert.convert.cli import main

from ..conftest import tree_digest


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/hostname", "sub/../../outside.safetensors"])
@pytest.mark.parametrize("command", ["bake", "hf-to-gguf"])
def test_index_paths_outside_the_checkpoint_are_refused(tmp_path, capsys, llama_model, shard, command):
    src = tmp_path / "src"
    shutil.copytree(llama_model.baked, src)
    (tmp_path / "outside.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": shard}}))
    before = tree_digest(tmp_path)
    out = tmp_path / ("out.gguf" if command == "hf-to-gguf" else "out")
    with pytest.raises(SystemExit) as exit_info:
        main([command, str(src), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "plain file names" in err[0], err
    assert tree_digest(tmp_path) == before and not out.exists()
