"""onnxruntime-genai loads an exported folder (genai_config.json) and generates what our runner generates,
across L_orig. Skipped unless onnxruntime_genai is importable (it is not a project dependency)."""

from __future__ import annotations

import numpy as np
import pytest

from .onnx_fixtures import L_ORIG, session, token_ids

PROMPT = L_ORIG - 6
NEW_TOKENS = 24  # the last 18 are generated with long factors


def _greedy_with_runner(folder, prompt: np.ndarray, steps: int) -> list[int]:
    sess = session(folder)
    logits, past = sess.forward(prompt)
    tokens = []
    for _ in range(steps):
        tokens.append(int(logits[0, -1].argmax()))
        logits, past = sess.forward(np.array([[tokens[-1]]]), past)
    return tokens


def test_genai_greedy_matches_runner_across_l_orig(llama_model, tmp_path):
    og = pytest.importorskip("onnxruntime_genai")
    from longrope_convert.convert.export_onnx import export_onnx

    folder = export_onnx(llama_model.baked, tmp_path / "onnx").output
    prompt = token_ids(PROMPT, seed=5).numpy() % 500 + 3  # no eos (2) in the prompt
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=PROMPT + NEW_TOKENS, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    produced = []
    while not generator.is_done():
        generator.generate_next_token()
        produced.append(int(generator.get_next_tokens()[0]))
    expected = _greedy_with_runner(folder, prompt, len(produced))
    assert len(produced) >= 10 and produced == expected
