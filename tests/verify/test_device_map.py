"""--device-map: transformers placed by accelerate, the reference's layers split over the visible GPUs."""

import json

import pytest
import torch
from longrope_convert.convert.cli import main
from longrope_convert.verify.device_map import layer_devices, parse_device_map
from longrope_convert.verify.transformers_runner import load_transformers_model, transformers_logits


def test_a_split_map_gives_identical_logits(llama_model):
    """Every module named separately (as a multi-GPU map names them); on CPU they all land on the CPU."""
    split = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.norm": "cpu",
             "model.rotary_emb": "cpu", "lm_head": "cpu"}
    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(9))
    whole = transformers_logits(load_transformers_model(llama_model.baked), ids)
    placed = transformers_logits(load_transformers_model(llama_model.baked, device_map=split), ids)
    assert torch.equal(whole, placed)


def test_reference_layers_split_in_contiguous_blocks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert layer_devices(8, "cuda", "auto") == ["cuda:0"] * 2 + ["cuda:1"] * 2 + ["cuda:2"] * 2 + ["cuda:3"] * 2
    assert layer_devices(3, "cuda", None) == ["cuda"] * 3
    assert layer_devices(3, "cpu", "auto") == ["cpu"] * 3


def test_verify_with_a_device_map_file(llama_model, tmp_path, capsys):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"": "cpu"}))
    assert parse_device_map(str(path)) == {"": "cpu"}
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(llama_model.baked), "--lengths", "200,300", "--device-map", str(path)])
    assert exit_info.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(llama_model.baked), "--lengths", "200", "--device-map", "everywhere"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--device-map" in err[0]


def test_reference_with_a_layer_plan_equals_the_plain_reference(llama_model):
    from longrope_convert.verify.reference_model import ReferenceDecoder

    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(10))
    plain = ReferenceDecoder(llama_model.baked).forward(ids).logits
    split = ReferenceDecoder(llama_model.baked, layer_devices=["cpu", "cpu"]).forward(ids).logits
    assert torch.equal(plain, split)
