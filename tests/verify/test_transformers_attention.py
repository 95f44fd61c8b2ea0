""""longrope_sdpa" is transformers' SDPA attention with KV heads expanded on CUDA: same logits, expanded keys.

CPU cannot show the CUDA fallback this avoids, so the tests switch the expanding branch on for CPU tensors
(`transformers_attention.expands_heads`) and prove the logits do not move and SDPA receives as many key heads
as query heads. Run as a script (`python this_file.py FOLDER`), it prints one JSON line about a forward in
whatever transformers is importable: the compat test runs it under transformers 4.57.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from longrope_convert.formats.architectures import ARCHITECTURES
from longrope_convert.verify import transformers_attention
from longrope_convert.verify.transformers_attention import ATTENTION_NAME, register_longrope_attention
from longrope_convert.verify.transformers_runner import load_transformers_model

REPO = Path(__file__).resolve().parents[2]
TF4_PATH = Path(os.environ.get("LONGROPE_TF4_PATH", REPO / ".venv-compat" / "tf4"))
LENGTHS = (200, 600)
ARCHS = tuple(ARCHITECTURES)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def random_ids(model, length: int, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def prefill_and_step(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-sequence logits (no cache), and the logits of the last token fed as one decode step after a cached
    prefill of the others."""
    full = model(input_ids=ids, use_cache=False).logits[0]
    past = model(input_ids=ids[:, :-1], use_cache=True).past_key_values
    step = model(input_ids=ids[:, -1:], past_key_values=past, use_cache=True).logits[0, -1]
    return full, step


def force_expansion(monkeypatch) -> None:
    """Take the CUDA-only branch (expand KV heads) for CPU tensors too."""
    monkeypatch.setattr(transformers_attention, "expands_heads", lambda query: True)


class SdpaRecorder:
    """Stands in for torch's SDPA: records query/key/value head counts and `enable_gqa`, then runs the real one."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, query, key, value, *args, **kwargs):
        self.calls.append((query.shape[1], key.shape[1], value.shape[1], kwargs.get("enable_gqa", False)))
        return self.real(query, key, value, *args, **kwargs)


@pytest.fixture(scope="module")
def models(demo_models):
    """(sdpa, longrope_sdpa) float32 models per architecture, loaded once."""
    return {arch: (load_transformers_model(demo_models[arch].baked, attn_implementation="sdpa"),
                   load_transformers_model(demo_models[arch].baked, attn_implementation=ATTENTION_NAME))
            for arch in demo_models}


def test_every_architecture_has_a_demo_model(demo_models):
    assert set(ARCHS) <= set(demo_models)


@pytest.mark.parametrize("expanded", (False, True), ids=("cpu-path", "expanded"))
@pytest.mark.parametrize("arch", ARCHS)
def test_same_logits_as_transformers_sdpa(models, monkeypatch, arch, expanded):
    if expanded:
        force_expansion(monkeypatch)
    sdpa, ours = models[arch]
    assert ours.config._attn_implementation == ATTENTION_NAME
    assert ours.config.num_attention_heads > ours.config.num_key_value_heads  # GQA: the case that matters
    for length in LENGTHS:
        ids = random_ids(sdpa, length)
        full_ref, step_ref = prefill_and_step(sdpa, ids)
        full, step = prefill_and_step(ours, ids)
        assert relative(full, full_ref) <= 1e-6, (arch, length)
        assert relative(step, step_ref) <= 1e-6, (arch, length)
        assert relative(step, full_ref[-1]) <= 1e-5, (arch, length)  # the cache path is really decoding


@pytest.mark.parametrize("arch", ARCHS)
def test_sdpa_gets_expanded_keys_only_on_the_expanding_path(models, monkeypatch, arch):
    _, ours = models[arch]
    recorder = SdpaRecorder(torch.nn.functional.scaled_dot_product_attention)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recorder)
    ids = random_ids(ours, 200)
    heads, kv_heads = ours.config.num_attention_heads, ours.config.num_key_value_heads
    layers = ours.config.num_hidden_layers

    prefill_and_step(ours, ids)  # CPU: transformers' own path, KV heads left as they are
    assert len(recorder.calls) == 3 * layers
    assert {(q, k) for q, k, _, _ in recorder.calls} == {(heads, kv_heads)}

    recorder.calls.clear()
    force_expansion(monkeypatch)
    prefill_and_step(ours, ids)  # the CUDA branch: prefill, cached prefill and the decode step all expanded
    assert len(recorder.calls) == 3 * layers
    assert set(recorder.calls) == {(heads, heads, heads, False)}


def test_registered_mask_is_sdpas():
    """A name missing from the mask registry would get no mask at all (5.x), losing sliding windows and padding."""
    register_longrope_attention()
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    assert ALL_MASK_ATTENTION_FUNCTIONS[ATTENTION_NAME] is ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]
    assert AttentionInterface()[ATTENTION_NAME] is transformers_attention.longrope_sdpa_attention_forward


def test_masks_reach_the_attention(demo_models, monkeypatch, tmp_path):
    """Sliding window and left padding only show if the mask arrives: same logits as transformers' SDPA, and
    visibly different from the model without the window."""
    force_expansion(monkeypatch)
    folder = tmp_path / "windowed"
    shutil.copytree(demo_models["MistralForCausalLM"].baked, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "sliding_window": 128}))
    sdpa = load_transformers_model(folder, attn_implementation="sdpa")
    ours = load_transformers_model(folder, attn_implementation=ATTENTION_NAME)
    unwindowed = load_transformers_model(demo_models["MistralForCausalLM"].baked, attn_implementation="sdpa")

    ids = random_ids(sdpa, 600).repeat(2, 1)
    mask = torch.ones_like(ids)
    mask[1, :37] = 0  # left padding on the second row
    with torch.inference_mode():
        ref = sdpa(input_ids=ids, attention_mask=mask, use_cache=False).logits
        got = ours(input_ids=ids, attention_mask=mask, use_cache=False).logits
        plain = unwindowed(input_ids=ids[:1], use_cache=False).logits
    assert relative(got, ref) <= 1e-6
    assert relative(got[0, 300:], plain[0, 300:]) > 1e-3  # the window changed the far positions
    assert relative(got[1, 37:], got[0, 37:]) > 1e-3  # the padding mask changed the second row


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_half_precisions_run_and_match(demo_models, monkeypatch, dtype):
    force_expansion(monkeypatch)
    folder = demo_models["LlamaForCausalLM"].baked
    sdpa = load_transformers_model(folder, dtype=dtype, attn_implementation="sdpa")
    ours = load_transformers_model(folder, dtype=dtype, attn_implementation=ATTENTION_NAME)
    ids = random_ids(sdpa, 200)
    (full_ref, step_ref), (full, step) = prefill_and_step(sdpa, ids), prefill_and_step(ours, ids)
    assert full.dtype == dtype
    assert relative(full, full_ref) <= 2e-2 and relative(step, step_ref) <= 2e-2


@pytest.mark.compat
@pytest.mark.parametrize("arch", ("MistralForCausalLM", "Phi3ForCausalLM"))
def test_registration_and_forward_in_transformers_4(demo_models, arch):
    if not (TF4_PATH / "transformers").is_dir():
        pytest.skip(f"transformers 4.x side environment not installed at {TF4_PATH} (scripts/test.sh makes it)")
    env = {**os.environ, "PYTHONPATH": str(TF4_PATH), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, __file__, str(demo_models[arch].baked)],
                          capture_output=True, text=True, env=env, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["transformers"].startswith("4.")
    assert out["attn_implementation"] == ATTENTION_NAME
    assert out["mask_is_sdpas"] is True
    assert out["expanded_key_heads"] == [out["heads"]]
    assert max(out["relative"].values()) <= 1e-6


def _probe(folder: str) -> dict:
    """In whatever transformers is importable: load sdpa and longrope_sdpa, force the expanding branch, and report
    the relative logit differences (full and decode step at each length) and the key heads SDPA saw."""
    transformers_attention.expands_heads = lambda query: True
    sdpa = load_transformers_model(folder, attn_implementation="sdpa")
    ours = load_transformers_model(folder, attn_implementation=ATTENTION_NAME)
    recorder = SdpaRecorder(torch.nn.functional.scaled_dot_product_attention)
    out = {"transformers": transformers.__version__, "attn_implementation": ours.config._attn_implementation,
           "heads": ours.config.num_attention_heads, "relative": {}}
    for length in LENGTHS:
        ids = random_ids(sdpa, length)
        full_ref, step_ref = prefill_and_step(sdpa, ids)
        torch.nn.functional.scaled_dot_product_attention = recorder
        full, step = prefill_and_step(ours, ids)
        torch.nn.functional.scaled_dot_product_attention = recorder.real
        out["relative"][f"full{length}"] = relative(full, full_ref)
        out["relative"][f"step{length}"] = relative(step, step_ref)
    out["expanded_key_heads"] = sorted({k for _, k, _, _ in recorder.calls})
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    out["mask_is_sdpas"] = ALL_MASK_ATTENTION_FUNCTIONS[ATTENTION_NAME] is ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]
    return out


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1])))
