import math

import pytest
import torch
from longrope_convert.formats.errors import SpecError
from longrope_convert.formats.factor_set import (
    FactorSet,
    choose_by_context_size,
    choose_by_sequence_length,
    llama_cpp_padded_ctx,
)
from longrope_convert.formats.spec import LongRopeSpec, default_attention_factor


def make_spec(**overrides) -> LongRopeSpec:
    fields = dict(
        long_factor=(1.0, 2.0, 4.0, 8.0),
        short_factor=(1.0, 1.0, 1.1, 1.2),
        original_max_position_embeddings=256,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rotary_dim=8,
    )
    fields.update(overrides)
    return LongRopeSpec(**fields)


def test_phi3_mini_128k_default_attention_factor():
    assert default_attention_factor(131072 / 4096, 4096) == pytest.approx(1.1902380714238083, abs=1e-15)


def test_attention_factor_is_one_without_extension_and_explicit_wins():
    assert default_attention_factor(1.0, 4096) == 1.0
    assert make_spec(explicit_attention_factor=1.5).attention_factor == 1.5
    assert make_spec().attention_factor == pytest.approx(math.sqrt(1 + math.log(4) / math.log(256)))


def test_inv_freq_divides_plain_rope_by_factors():
    spec = make_spec()
    expected = [1.0 / (f * 10000.0 ** (2 * i / 8)) for i, f in enumerate(spec.long_factor)]
    assert spec.inv_freq_list(FactorSet.LONG) == pytest.approx(expected, rel=1e-15)
    got = spec.inv_freq(FactorSet.LONG, torch.float64)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-14)


def test_cos_sin_carry_attention_factor_and_half_layout():
    spec = make_spec()
    cos, sin = spec.cos_sin(torch.arange(10), FactorSet.SHORT)
    assert cos.shape == (10, 8)
    assert torch.allclose(cos[:, :4], cos[:, 4:])
    assert cos[0, 0].item() == pytest.approx(spec.attention_factor)
    angle = 7 * spec.inv_freq_list(FactorSet.SHORT)[3]
    assert sin[7, 3].item() == pytest.approx(math.sin(angle) * spec.attention_factor, rel=1e-12)


def test_selection_rule_l_orig_is_short_and_l_orig_plus_one_is_long():
    spec = make_spec()
    assert spec.factor_set_for_length(256) is FactorSet.SHORT
    assert spec.factor_set_for_length(257) is FactorSet.LONG
    assert choose_by_sequence_length(1, 256) is FactorSet.SHORT
    cos_256, _ = spec.cos_sin(torch.arange(256))
    cos_short, _ = spec.cos_sin(torch.arange(256), FactorSet.SHORT)
    assert torch.equal(cos_256, cos_short)


def test_llama_cpp_rule_pads_context_to_256():
    assert llama_cpp_padded_ctx(1) == 256 and llama_cpp_padded_ctx(257) == 512
    assert choose_by_context_size(256, 256) is FactorSet.SHORT
    assert choose_by_context_size(257, 256) is FactorSet.LONG
    # with an L_orig that is not a multiple of 256, padding flips the choice below L_orig
    assert choose_by_context_size(290, 300) is FactorSet.LONG


def test_start_tokens_keep_plain_rope_without_mscale():
    spec = make_spec(start_tokens=4)
    cos, _ = spec.cos_sin(torch.arange(8), FactorSet.LONG)
    plain = make_spec(long_factor=(1.0,) * 4, explicit_attention_factor=1.0)
    plain_cos, _ = plain.cos_sin(torch.arange(8), FactorSet.LONG)
    assert torch.allclose(cos[:4], plain_cos[:4])
    assert not torch.allclose(cos[4:], plain_cos[4:])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(long_factor=(1.0, 2.0)), "expected 4"),
        (dict(short_factor=(1.0, float("nan"), 1.0, 1.0)), "finite"),
        (dict(long_factor=(1.0, -2.0, 1.0, 1.0)), "> 0"),
        (dict(max_position_embeddings=128), "below"),
        (dict(rotary_dim=7), "even"),
        (dict(explicit_attention_factor=0.0), "attention factor"),
    ],
)
def test_invalid_specs_are_refused(overrides, message):
    with pytest.raises(SpecError, match=message):
        make_spec(**overrides)


def test_swapped_spec_exchanges_sets():
    spec = make_spec()
    swapped = spec.with_factors_swapped()
    assert swapped.long_factor == spec.short_factor and swapped.short_factor == spec.long_factor
