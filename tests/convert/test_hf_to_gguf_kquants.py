"""hf-to-gguf --outtype q4_0/q4_k_m/q5_k_m/q6_k through llama.cpp's own quantizer, and --outtype auto.

K-quant blocks hold 256 values per row, so these tests use tiny checkpoints with 256/512-wide rows
(gguf_fixtures.write_kquant_model): the demo's hidden size 64 would make every matrix fall back to Q5_0/Q8_0.
Factor tensors must come out F32 and bit-identical, the logits within verify's documented tolerance for the
type, and a GGUF with swapped factor sets must still fail that tolerance.
"""

from __future__ import annotations

import functools

import gguf
import numpy as np
import pytest
from longrope_convert.convert.cli import main
from longrope_convert.formats.gguf.reader import field_value, read_gguf_facts
from longrope_convert.formats.hf.config import read_config, spec_from_config
from longrope_convert.formats.spec_inputs import SpecRequest
from longrope_convert.verify.llama_cpp_runner import gguf_factor_set
from longrope_convert.verify.tolerances import failures, tolerance_for

from .gguf_fixtures import (
    L_ORIG,
    LONG_CTX,
    LONG_LEN,
    SHORT_CTX,
    SHORT_LEN,
    llama_cpp_comparison,
    write_kquant_model,
)

llama_cpp = pytest.importorskip("llama_cpp")

Q = gguf.GGMLQuantizationType
KQUANTS = ("q4_0", "q4_k_m", "q5_k_m", "q6_k")
# the main block type of each mixture (llama.cpp's q4_k_m/q5_k_m put Q6_K on attn_v, half of ffn_down and the head)
MAIN_TYPE = {"q4_0": Q.Q4_0, "q4_k_m": Q.Q4_K, "q5_k_m": Q.Q5_K, "q6_k": Q.Q6_K}
FILE_TYPE = {"q4_0": 2, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}  # llama_ftype values
FACTOR_TENSORS = ("rope_factors_long.weight", "rope_factors_short.weight")
CASES = ((SHORT_LEN, SHORT_CTX), (LONG_LEN, LONG_CTX))
# q4_0 on random 256-wide weights errs by ~0.17 rel_l2 itself; swapped sets add ~0.05: caught at 200 tokens
# (rel_l2 0.227-0.25 > 0.22), not always at 600 (0.222 vs a limit of 0.24). The K-quants catch it at every length.
SWAP_CAUGHT_SHORT_ONLY = ("q4_0",)


@pytest.fixture(scope="module")
def kq_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kquant_models")
    return {hf: write_kquant_model(root, hf) for hf in ("LlamaForCausalLM", "Phi3ForCausalLM")}


@pytest.fixture(scope="module")
def kq_out(tmp_path_factory):
    return tmp_path_factory.mktemp("kquant_out")


@functools.lru_cache(maxsize=None)
def quantized(baked, out_dir, outtype: str, swapped: bool = False):
    """Convert once per (model, outtype, swapped) for the session; swapped = long and short factor files
    exchanged."""
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf

    out = out_dir / f"{baked.parent.name}-{outtype}{'-swapped' if swapped else ''}.gguf"
    request = SpecRequest(long_factors=baked.parent / "short_factors.csv",
                          short_factors=baked.parent / "long_factors.csv") if swapped else None
    convert_hf_to_gguf(baked, out, request, outtype=outtype, progress=False)
    return out


@pytest.mark.parametrize("outtype", KQUANTS)
def test_quantizer_output_keeps_factor_tensors_f32_and_bit_identical(kq_models, kq_out, outtype):
    baked = kq_models["LlamaForCausalLM"]
    path = quantized(baked, kq_out, outtype)
    spec = spec_from_config(read_config(baked))
    reader = gguf.GGUFReader(path)
    ts = {t.name: t for t in reader.tensors}
    for name, values in zip(FACTOR_TENSORS, (spec.long_factor, spec.short_factor)):
        assert ts[name].tensor_type == Q.F32
        assert ts[name].data.tobytes() == np.asarray(values, dtype=np.float32).tobytes()
    kinds = [t.tensor_type for t in ts.values() if len(t.shape) >= 2]
    assert kinds.count(MAIN_TYPE[outtype]) >= len(kinds) // 2  # 256-wide rows: no fallback for the bulk
    assert all(t.tensor_type == Q.F32 for t in ts.values() if len(t.shape) == 1)
    kv = {k: field_value(f) for k, f in reader.fields.items()}
    assert kv["general.file_type"] == FILE_TYPE[outtype]
    assert kv["llama.rope.scaling.type"] == "longrope"
    assert kv["llama.rope.scaling.original_context_length"] == L_ORIG
    assert kv["longrope_convert.long_factor"] == pytest.approx(spec.long_factor, rel=0, abs=0)  # keys copied
    assert read_gguf_facts(path).precision == outtype and read_gguf_facts(path).has_factors
    assert sorted(p.name for p in kq_out.iterdir() if p.name.startswith(".")) == []  # intermediate deleted


@pytest.mark.parametrize("outtype", KQUANTS)
@pytest.mark.parametrize("hf_class", ("LlamaForCausalLM", "Phi3ForCausalLM"))
@pytest.mark.parametrize("length, n_ctx", CASES)
def test_quantized_within_documented_tolerance_and_swapped_sets_fail(kq_models, kq_out, outtype, hf_class,
                                                                      length, n_ctx):
    baked = kq_models[hf_class]
    which = gguf_factor_set(n_ctx, L_ORIG)
    tol = tolerance_for("gguf", outtype).at_length(length)
    good = llama_cpp_comparison(quantized(baked, kq_out, outtype), baked, length, n_ctx, which)
    assert failures(tol, good.relative_l2, good.mean_kl, good.top1_agreement, good.max_abs_diff) == [], good
    assert good.relative_l2 > 1e-2  # it is quantized (measured 0.04 q6_k .. 0.18 q4_0)
    bad = llama_cpp_comparison(quantized(baked, kq_out, outtype, swapped=True), baked, length, n_ctx, which)
    caught = failures(tol, bad.relative_l2, bad.mean_kl, bad.top1_agreement, bad.max_abs_diff)
    if outtype in SWAP_CAUGHT_SHORT_ONLY and length > L_ORIG:
        assert bad.relative_l2 > good.relative_l2 * 1.2, bad  # worse, but within q4_0's own noise here
    else:
        assert caught, bad


def test_verify_passes_q4_k_m_and_fails_it_with_swapped_sets(kq_models, kq_out, tmp_path, capsys):
    import json

    baked = kq_models["LlamaForCausalLM"]
    good, bad = quantized(baked, kq_out, "q4_k_m"), quantized(baked, kq_out, "q4_k_m", swapped=True)
    report = tmp_path / "report.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(baked), "--gguf", str(good), "--gguf", str(bad), "--lengths", "200,256,257,600",
              "--no-transformers", "--json", str(report)])
    capsys.readouterr()
    assert exit_info.value.code == 1
    results = json.loads(report.read_text())["results"]
    status = {(r["target"].split(":")[1].split()[0], r["label"]): r["status"] for r in results}
    assert [status[(good.name, k)] for k in ("200", "256", "257", "600")] == ["pass"] * 4
    assert [status[(bad.name, k)] for k in ("200", "256", "257", "600")] == ["fail"] * 4
    assert {r["precision"] for r in results} == {"q4_k_m"}


def test_quantize_phase_shows_a_tensor_bar(kq_models, tmp_path, capsys):
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf

    convert_hf_to_gguf(kq_models["LlamaForCausalLM"], tmp_path / "bar.gguf", outtype="q6_k", progress=True)
    err = capsys.readouterr().err
    assert "hf-to-gguf" in err and "quantize q6_k" in err
    assert "23/23" in err  # 21 weight tensors + 2 factor tensors, counted from llama.cpp's log


@pytest.mark.parametrize("failure", ("interrupt-in-callback", "terminated", "quantizer-error"))
def test_failure_or_interrupt_while_quantizing_leaves_nothing(kq_models, tmp_path, monkeypatch, failure):
    """The intermediate and the temp output are gone after an interrupt (raised from the log callback, where
    ctypes would drop it, and re-raised after the C call), a SIGTERM (Terminated) or a quantizer failure."""
    from longrope_convert.convert.cli import Terminated
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf
    from longrope_convert.formats.gguf import quantize

    expected: type[BaseException]
    if failure == "interrupt-in-callback":
        class InterruptingBar:
            def __init__(self, *args, **kwargs):
                self.n, self.total = 0, 0

            def update(self, n):
                raise KeyboardInterrupt

            def close(self):
                pass

        monkeypatch.setattr(quantize, "tqdm", InterruptingBar)
        expected = KeyboardInterrupt
    elif failure == "terminated":
        def terminated(src, dst, params):
            dst_path = dst.decode()
            with open(dst_path, "wb") as f:
                f.write(b"GGUF half")
            raise Terminated(15)

        monkeypatch.setattr(llama_cpp, "llama_model_quantize", terminated)
        expected = Terminated
    else:
        monkeypatch.setattr(llama_cpp, "llama_model_quantize", lambda src, dst, params: 1)
        expected = quantize.QuantizeError
    out = tmp_path / "out.gguf"
    with pytest.raises(expected):
        convert_hf_to_gguf(kq_models["LlamaForCausalLM"], out, outtype="q4_k_m", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_outtype_auto_follows_llama_cpp_converter(tmp_path):
    """bf16 source -> bf16, f16 -> f16, f32 -> f16 (llama.cpp's GUESSED rule: only a 16-bit 2-D tensor decides)."""
    import torch
    from longrope_convert.convert.demo.models import write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import write_tiny_checkpoint
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf

    for dtype, expected, file_type in ((torch.bfloat16, Q.BF16, 32), (torch.float16, Q.F16, 1),
                                       (torch.float32, Q.F16, 1)):
        name = str(dtype).replace("torch.", "")
        plain = write_tiny_checkpoint(tmp_path / name, "LlamaForCausalLM", dtype=dtype)
        long_path, short_path = write_example_factor_files(tmp_path / name, 16)
        request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=1024)
        result = convert_hf_to_gguf(plain, tmp_path / f"{name}.gguf", request, outtype="auto", no_vocab=True,
                                    progress=False)
        assert result.outtype == {Q.BF16: "bf16", Q.F16: "f16"}[expected]
        reader = gguf.GGUFReader(result.output)
        assert {t.tensor_type for t in reader.tensors if len(t.shape) >= 2} == {expected}, name
        assert field_value(reader.fields["general.file_type"]) == file_type


def test_bf16_source_is_quantized_from_a_bf16_intermediate(tmp_path, monkeypatch):
    """No rounding before llama.cpp's quantizer: the intermediate keeps the source's own type."""
    import torch
    from longrope_convert.convert.demo.models import write_example_factor_files
    from longrope_convert.convert.demo.tiny_checkpoint import (
        TinyShape,
        write_tiny_checkpoint,
    )
    from longrope_convert.convert.hf_to_gguf import convert_hf_to_gguf
    from longrope_convert.formats.gguf import quantize

    plain = write_tiny_checkpoint(tmp_path / "bf16", "LlamaForCausalLM",
                                  TinyShape(hidden_size=256, intermediate_size=512, head_dim=64), dtype=torch.bfloat16)
    long_path, short_path = write_example_factor_files(tmp_path, 64)
    seen = {}
    real = quantize.quantize_gguf

    def spy(src, dst, outtype, n_tensors, progress=None):
        seen["types"] = {t.tensor_type for t in gguf.GGUFReader(src).tensors if len(t.shape) >= 2}
        return real(src, dst, outtype, n_tensors, progress)

    monkeypatch.setattr(quantize, "quantize_gguf", spy)
    request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=1024)
    convert_hf_to_gguf(plain, tmp_path / "q.gguf", request, outtype="q6_k", no_vocab=True, progress=False)
    assert seen["types"] == {Q.BF16}
    assert Q.Q6_K in {t.tensor_type for t in gguf.GGUFReader(tmp_path / "q.gguf").tensors}


def test_cli_outfile_alias_and_choices(kq_models, tmp_path, capsys):
    from longrope_convert.convert import cmd_hf_to_gguf
    from longrope_convert.formats.gguf.dtypes import OUTTYPE_CHOICES
    from longrope_convert.formats.gguf.layouts import FACTOR_SET_CHOICES

    assert cmd_hf_to_gguf.OUTTYPES == OUTTYPE_CHOICES
    assert cmd_hf_to_gguf.FACTOR_SETS == FACTOR_SET_CHOICES
    out = tmp_path / "alias.gguf"
    with pytest.raises(SystemExit) as exit_info:
        main(["hf-to-gguf", str(kq_models["LlamaForCausalLM"]), "--outfile", str(out), "--outtype", "q4_0"])
    assert exit_info.value.code == 0 and read_gguf_facts(out).precision == "q4_0"
    with pytest.raises(SystemExit):
        main(["hf-to-gguf", "--help"])
    help_text = capsys.readouterr().out
    assert "--outfile" in help_text and "q4_k_m" in help_text and " OUT." not in help_text
