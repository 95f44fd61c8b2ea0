"""onnxruntime-genai (a test dependency) loads an exported folder through genai_config.json and generates greedily
across L_orig: prompt just under L_orig, then past it, with the GroupQueryAttention graph (the default).

LLaMA: genai's tokens equal transformers' `generate(do_sample=False)` and our runner's (cached keys are never
re-rotated by any of them). Phi-3: transformers' `generate()` drops the cache and re-prefills at L_orig+1, so its
tokens differ from the cached semantics; genai on our folder keeps the cache (no re-prefill: the rope switch is
inside our graph and genai_config carries no rope settings), i.e. equals our runner, and transformers' tokens equal
our runner re-prefilling at L_orig+1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from longrope_convert.convert.export_onnx import export_onnx
from longrope_convert.formats.onnx import names as N

from .onnx_fixtures import L_ORIG, session, token_ids

og = pytest.importorskip("onnxruntime_genai")

PROMPT = L_ORIG - 6
NEW_TOKENS = 24  # the last 18 are generated with long factors
EOS = 2  # the demo tokenizer's eos; kept out of prompts


def _prompt(seed: int = 5) -> np.ndarray:
    return token_ids(PROMPT, seed=seed).numpy() % 500 + 3


def _greedy_with_genai(folder, prompt: np.ndarray) -> list[int]:
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=PROMPT + NEW_TOKENS, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    produced = []
    while not generator.is_done():
        generator.generate_next_token()
        produced.append(int(generator.get_next_tokens()[0]))
    return produced


def _greedy_with_runner(folder, prompt: np.ndarray, steps: int, reprefill_at: int | None = None) -> list[int]:
    """Our runner, cached; with `reprefill_at`, the forward reaching that total length re-runs every token without
    cache (Phi-3-family generate() at L_orig+1)."""
    sess = session(folder)
    logits, past = sess.forward(prompt)
    tokens: list[int] = []
    for _ in range(steps):
        tokens.append(int(logits[0, -1].argmax()))
        total = prompt.shape[1] + len(tokens)
        if total == reprefill_at:
            logits, past = sess.forward(np.concatenate([prompt, [tokens]], axis=1))
        else:
            logits, past = sess.forward(np.array([[tokens[-1]]]), past)
    return tokens


@torch.inference_mode()
def _greedy_with_transformers(baked, prompt: np.ndarray) -> list[int]:
    from longrope_convert.verify.transformers_runner import load_transformers_model

    model = load_transformers_model(baked)
    out = model.generate(torch.from_numpy(prompt), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                         do_sample=False)
    return out[0, prompt.shape[1]:].tolist()


@pytest.fixture(scope="module")
def gqa_folders(demo_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("genai")
    return {cls: export_onnx(demo_models[cls].baked, root / cls).output
            for cls in ("LlamaForCausalLM", "Phi3ForCausalLM")}


def test_genai_greedy_equals_transformers_generate_on_llama(demo_models, gqa_folders):
    folder, prompt = gqa_folders["LlamaForCausalLM"], _prompt()
    produced = _greedy_with_genai(folder, prompt)
    assert len(produced) == NEW_TOKENS and EOS not in produced
    assert produced == _greedy_with_transformers(demo_models["LlamaForCausalLM"].baked, prompt)
    assert produced == _greedy_with_runner(folder, prompt, NEW_TOKENS)


def test_genai_on_phi3_keeps_the_cache_where_transformers_generate_re_prefills(demo_models, gqa_folders):
    folder, prompt = gqa_folders["Phi3ForCausalLM"], _prompt()
    produced = _greedy_with_genai(folder, prompt)
    transformers_tokens = _greedy_with_transformers(demo_models["Phi3ForCausalLM"].baked, prompt)
    assert produced == _greedy_with_runner(folder, prompt, NEW_TOKENS)
    assert transformers_tokens == _greedy_with_runner(folder, prompt, NEW_TOKENS, reprefill_at=L_ORIG + 1)
    first_difference = next(i for i, (a, b) in enumerate(zip(produced, transformers_tokens)) if a != b)
    assert PROMPT + first_difference >= L_ORIG  # identical until the step that crosses L_orig


def test_genai_config_matches_the_graph(gqa_folders):
    """Separate past/present buffers (the graph concatenates inside GroupQueryAttention), Optimum names."""
    config = json.loads((gqa_folders["LlamaForCausalLM"] / N.GENAI_CONFIG_FILE).read_text())
    decoder = config["model"]["decoder"]
    assert config["search"]["past_present_share_buffer"] is False
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key"
    assert decoder["outputs"]["present_value_names"] == "present.%d.value"
    assert (decoder["num_attention_heads"], decoder["num_key_value_heads"]) == (4, 2)
