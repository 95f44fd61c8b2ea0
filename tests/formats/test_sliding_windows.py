"""The sliding-window rule per layer lives in the architecture description and agrees with transformers: the
reference and the ONNX graph follow it, and hf-to-gguf refuses a window llama.cpp would ignore."""

import json

import pytest
import torch
from longrope_convert.formats.architectures import ARCHITECTURES
from longrope_convert.formats.errors import ConfigError

QWEN2, MISTRAL, LLAMA = (ARCHITECTURES[n] for n in ("Qwen2ForCausalLM", "MistralForCausalLM", "LlamaForCausalLM"))


@pytest.mark.parametrize("config, expected", [
    ({"use_sliding_window": False, "sliding_window": 64, "max_window_layers": 1}, (None, None, None)),
    ({"use_sliding_window": True, "sliding_window": 64, "max_window_layers": 1}, (None, 64, 64)),
    ({"use_sliding_window": True, "sliding_window": 64, "max_window_layers": 0}, (64, 64, 64)),
    ({"use_sliding_window": True, "max_window_layers": 2}, (None, None, 4096)),  # transformers' default window
    ({"use_sliding_window": True, "sliding_window": 64}, (None, None, None)),  # default max_window_layers 28
    ({"use_sliding_window": True, "sliding_window": 64,
      "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}, (64, None, 64)),
    ({"use_sliding_window": True, "sliding_window": None, "max_window_layers": 0}, (None, None, None)),
])
def test_qwen2_rule(config, expected):
    assert QWEN2.layer_windows(config, 3) == expected


def test_other_architectures():
    assert MISTRAL.layer_windows({"sliding_window": 64}, 2) == (64, 64)
    assert MISTRAL.layer_windows({}, 2) == (4096, 4096)  # MistralConfig's default
    assert MISTRAL.layer_windows({"sliding_window": None}, 2) == (None, None)
    assert LLAMA.layer_windows({"sliding_window": 64}, 2) == (None, None)


@pytest.mark.parametrize("config", [
    {"use_sliding_window": True, "sliding_window": -3},
    {"use_sliding_window": True, "sliding_window": 64, "max_window_layers": "x"},
    {"use_sliding_window": True, "sliding_window": 64, "layer_types": ["full_attention"]},
    {"use_sliding_window": True, "sliding_window": 64, "layer_types": ["global"] * 3},
])
def test_bad_window_settings_are_config_errors(config):
    with pytest.raises(ConfigError):
        QWEN2.layer_windows(config, 3)


@pytest.fixture(scope="module")
def windowed_qwen2(tmp_path_factory):
    """A baked 3-layer Qwen2 whose last two layers slide with a 64-token window (L_orig 256 -> 1024)."""
    from longrope_convert.convert.bake import bake_checkpoint
    from longrope_convert.convert.demo.models import write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import TinyShape, write_tiny_checkpoint
    from longrope_convert.formats.spec_inputs import SpecRequest

    root = tmp_path_factory.mktemp("qwen2-window")
    plain = write_tiny_checkpoint(root / "plain", "Qwen2ForCausalLM", TinyShape(num_layers=3), seed=11)
    config = json.loads((plain / "config.json").read_text())
    config |= {"use_sliding_window": True, "sliding_window": 64, "max_window_layers": 1}
    (plain / "config.json").write_text(json.dumps(config))
    long_path, short_path = write_example_factor_files(root, 16)
    request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=1024)
    return bake_checkpoint(plain, root / "baked", request).output


def _ids(length: int) -> torch.Tensor:
    return torch.randint(0, 512, (1, length), generator=torch.Generator().manual_seed(length))


def test_windows_match_transformers_layer_types(windowed_qwen2):
    from longrope_convert.formats.hf.checkpoint import open_checkpoint
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(windowed_qwen2)
    expected = tuple(hf.sliding_window if t == "sliding_attention" else None for t in hf.layer_types)
    assert open_checkpoint(windowed_qwen2).windows == expected == (None, 64, 64)


@pytest.mark.parametrize("length", [200, 600])  # a window smaller than the prompt, short and long factor sets
def test_reference_and_onnx_match_transformers(windowed_qwen2, tmp_path, length):
    from longrope_convert.convert.export_onnx import export_onnx
    from longrope_convert.verify.metrics import compare_logits
    from longrope_convert.verify.onnx_runner import OnnxDecoderSession
    from longrope_convert.verify.reference_model import ReferenceDecoder
    from longrope_convert.verify.transformers_runner import load_transformers_model, transformers_logits

    expected = transformers_logits(load_transformers_model(windowed_qwen2), _ids(length))
    reference = ReferenceDecoder(windowed_qwen2, torch.float32)
    cmp = compare_logits(reference.forward(_ids(length)).logits, expected)
    assert cmp.relative_l2 <= 1e-5 and cmp.top1_agreement == 1.0, cmp
    folder = export_onnx(windowed_qwen2, tmp_path / "onnx").output
    onnx_logits = OnnxDecoderSession(folder).forward(_ids(length).numpy())[0]
    assert compare_logits(torch.from_numpy(onnx_logits), expected).relative_l2 <= 1e-4
    reference.windows = (None,) * 3  # the window must matter, or this test proves nothing
    assert compare_logits(reference.forward(_ids(length)).logits, expected).relative_l2 > 1e-2


@pytest.mark.parametrize("chunk", [64, 1024])  # several chunks, or one
def test_windowed_reference_at_sampled_rows_equals_one_forward(windowed_qwen2, monkeypatch, chunk):
    """The last layer runs its queries and MLP at the compared rows only; windows still apply per query."""
    from longrope_convert.formats.factor_set import FactorSet
    from longrope_convert.verify import reference_run
    from longrope_convert.verify.reference_model import ReferenceDecoder
    from longrope_convert.verify.reference_run import ReferenceRunner

    monkeypatch.setattr(reference_run, "MIN_CHUNK", chunk)
    monkeypatch.setattr(reference_run, "MAX_CHUNK", chunk)
    whole = ReferenceDecoder(windowed_qwen2).forward(_ids(600), factor_set=FactorSet.LONG).logits[0]
    rows = torch.tensor([0, 1, 63, 64, 65, 130, 255, 256, 257, 420, 599])
    runner = ReferenceRunner(windowed_qwen2, ReferenceDecoder(windowed_qwen2).spec)
    sampled = runner.prefill(_ids(600), FactorSet.LONG, rows).logits
    assert torch.allclose(sampled, whole[rows], rtol=0, atol=1e-10)


def test_hf_to_gguf_refuses_a_window_llama_cpp_ignores(windowed_qwen2, tmp_path):
    from longrope_convert.convert.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["hf-to-gguf", str(windowed_qwen2), "-o", str(tmp_path / "m.gguf"), "--factor-sets", "long",
              "--no-vocab"])
    assert exit_info.value.code == 2
    assert not list(tmp_path.iterdir())
