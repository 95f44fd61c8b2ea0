"""The long-sequence machinery (used at 32k+ on a GPU) exercised on CPU at small sizes: chunked reference
prefill, comparing only the last positions, and the device choice."""

from __future__ import annotations

import pytest
import torch
from longrope_convert.formats.factor_set import FactorSet
from longrope_convert.verify import cases as cases_module
from longrope_convert.verify import reference_run
from longrope_convert.verify.reference_model import ReferenceDecoder
from longrope_convert.verify.reference_run import ReferenceRunner, choose_reference_dtype, decode_set_label
from longrope_convert.verify.runner import DeviceError, VerifyOptions, resolve_device, run_verification


@pytest.fixture(scope="module")
def mistral(demo_models):
    return demo_models["MistralForCausalLM"].baked


@pytest.mark.parametrize("which", [FactorSet.SHORT, FactorSet.LONG])
def test_chunked_prefill_equals_one_forward(mistral, monkeypatch, which):
    ids = torch.randint(0, 512, (1, 600), generator=torch.Generator().manual_seed(3))
    whole = ReferenceDecoder(mistral).forward(ids, factor_set=which).logits[0]
    monkeypatch.setattr(reference_run, "MIN_CHUNK", 64)
    monkeypatch.setattr(reference_run, "MAX_CHUNK", 64)  # 10 chunks, the tail split inside one
    runner = ReferenceRunner(mistral, ReferenceDecoder(mistral).spec)
    assert runner.chunk_size(600) == 64
    tail = runner.prefill(ids, which, torch.arange(500, 600)).logits
    assert tail.shape == (100, 512)
    assert torch.allclose(tail, whole[-100:], rtol=0, atol=1e-10)
    spread = torch.tensor([0, 1, 63, 64, 255, 256, 257, 599])  # head, chunk edges, around L_orig, last
    assert torch.allclose(runner.prefill(ids, which, spread).logits, whole[spread], rtol=0, atol=1e-10)


def test_decode_steps_switch_sets_with_the_cache(mistral):
    runner = ReferenceRunner(mistral, ReferenceDecoder(mistral).spec)
    ids = torch.randint(0, 512, (1, 258), generator=torch.Generator().manual_seed(4))
    decoded = runner.decode(ids, 255)
    logits, sets = decoded.logits, list(decoded.sets)
    assert logits.shape == (3, 512)
    assert sets == [FactorSet.SHORT, FactorSet.LONG, FactorSet.LONG]
    assert decode_set_label(sets) == "short->long"
    # the step at position 256 with cached short-rotated keys differs from a fresh long forward
    fresh = ReferenceDecoder(mistral).forward(ids[:, :257]).logits[0, -1]
    assert (logits[1] - fresh).abs().max().item() > 1e-4


def test_only_the_last_positions_are_compared_when_over_the_budget(mistral, monkeypatch):
    monkeypatch.setattr(cases_module, "LOGIT_ELEMENT_BUDGET", 100 * 512)
    report = run_verification(VerifyOptions(src=mistral, lengths="600", device="cpu", progress=False))
    (result,) = report.results
    assert result.status == "pass" and result.metrics["positions"] == 100
    assert report.cases[0].compared_positions == 100


def test_device_choice(monkeypatch, mistral):
    assert choose_reference_dtype("cpu", mistral) is torch.float64
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_sdpa_attention_used_on_cuda_keeps_transformers_logits(mistral):
    from longrope_convert.verify.transformers_runner import load_transformers_model

    ids = torch.randint(0, 512, (1, 600), generator=torch.Generator().manual_seed(5))
    eager_model = load_transformers_model(mistral)
    sdpa_model = load_transformers_model(mistral, attn_implementation="sdpa")
    with torch.inference_mode():
        eager = eager_model(input_ids=ids, use_cache=False, logits_to_keep=50).logits
        sdpa = sdpa_model(input_ids=ids, use_cache=False, logits_to_keep=50).logits
    assert sdpa_model.config._attn_implementation == "sdpa"
    assert eager.shape == (1, 50, 512)
    assert ((sdpa - eager).norm() / eager.norm()).item() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_verify_reaches_32k_tokens(mistral):
    report = run_verification(VerifyOptions(src=mistral, lengths="200,256,257,32768,255+2", device="cuda",
                                            allow_beyond_max=True, progress=False))
    assert report.device == "cuda" and report.passed
    long_row = next(r for r in report.results if r.length == 32768)
    assert long_row.metrics["positions"] == 32768 and long_row.factor_set == "long"


def test_reference_dtype_and_long_cases_follow_free_gpu_memory(mistral, monkeypatch):
    """The CUDA-only sizing, driven by a stubbed torch.cuda.mem_get_info: float64 while three copies of the
    float64 weights fit, and the long cases capped at the length whose KV cache fits in 40% of free memory."""
    import math

    from longrope_convert.formats.hf.tensor_index import checkpoint_tensors

    params = sum(math.prod(info.shape) for info in checkpoint_tensors(mistral).values())
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (params * 8 * 3 + 1, 80 * 2**30))
    assert choose_reference_dtype("cuda", mistral) is torch.float64
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (params * 8 * 3 - 1, 80 * 2**30))
    assert choose_reference_dtype("cuda", mistral) is torch.float32
    runner = ReferenceRunner(mistral, ReferenceDecoder(mistral).spec)
    assert runner.max_tokens_in_memory() is None  # CPU: no cap
    runner.device = "cuda"
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (2**30, 80 * 2**30))
    per_token = 2 * 2 * 2 * 16 * 8  # (k, v) x 2 layers x 2 kv heads x head_dim 16 x float64
    assert runner.max_tokens_in_memory() == int(0.4 * 2**30 / per_token)


def test_reference_out_of_gpu_memory_is_one_line_and_exit_2(mistral, monkeypatch, capsys):
    from longrope_convert.convert.cli import main

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")

    monkeypatch.setattr(ReferenceRunner, "prefill", out_of_memory)
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(mistral), "--device", "cpu", "--lengths", "600"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert len(errors) == 1 and "the reference at 600 tokens does not fit in GPU memory" in errors[0]


def test_kv_cache_grows_in_place_and_matches_one_forward(mistral):
    """A cache allocated too small doubles its buffers; chunked forwards through it equal one whole forward."""
    from longrope_convert.verify.reference_model import KVCache

    model = ReferenceDecoder(mistral)
    ids = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(2))
    whole = model.forward(ids, factor_set=FactorSet.LONG).logits[0, -1]
    cache = KVCache(capacity=8)
    for start in range(0, 300, 100):
        result = model.forward(ids[:, start:start + 100], cache, FactorSet.LONG)
    assert result.cache is cache and cache.length == 300
    assert torch.allclose(result.logits[0, -1], whole, rtol=0, atol=1e-10)
