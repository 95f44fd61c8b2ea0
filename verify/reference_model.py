"""An independent PyTorch decoder (LLaMA, Mistral, Qwen2, Phi-3) whose rotary comes from the LongRoPE spec.

It shares no modeling code with transformers: weights are read from safetensors, cos/sin from
`LongRopeSpec.cos_sin`. float64 is the truth; float32 mimics transformers' order of operations.
The KV cache holds keys already rotated, so a decode step across L_orig mixes sets as transformers does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..formats.architectures import Role
from ..formats.factor_set import FactorSet
from ..formats.hf.checkpoint import Checkpoint, as_checkpoint
from ..formats.hf.rope_keys import rope_theta
from ..formats.spec import LongRopeSpec, plain_factors
from .reference_weights import DecoderWeights, LayerWeights, load_decoder_weights


@dataclass
class KVCache:
    """Per layer (keys, values) of shape [B, n_kv, T, head_dim], keys stored after rotation."""

    layers: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0


@dataclass
class ForwardResult:
    logits: torch.Tensor  # [B, T, vocab] (or [B, 1, vocab] with last_only)
    cache: KVCache
    factor_set: FactorSet


def plain_rope_spec(config: dict, rotary_dim: int) -> LongRopeSpec:
    """A spec that reproduces plain RoPE: all-ones factors, no attention factor, L_orig = max positions."""
    max_pos = int(config.get("max_position_embeddings") or 4096)
    ones = plain_factors(rotary_dim)
    return LongRopeSpec(ones, ones, max_pos, max_pos, rope_theta(config), rotary_dim, explicit_attention_factor=1.0)


class ReferenceDecoder:
    """Load once, run many forwards. `spec` overrides the config's LongRoPE numbers (to test wrong ones)."""

    def __init__(self, checkpoint: Checkpoint | str | Path, dtype: torch.dtype = torch.float64, device: str = "cpu",
                 spec: LongRopeSpec | None = None):
        checkpoint = as_checkpoint(checkpoint)
        self.config, self.arch, self.geo = checkpoint.config, checkpoint.arch, checkpoint.geometry
        self.spec = spec or checkpoint.spec or plain_rope_spec(self.config, self.geo.rotary_dim)
        self.dtype, self.device = dtype, device
        self.windows = checkpoint.windows  # per layer, from the architecture's rule (transformers' layer_types)
        self.weights: DecoderWeights = load_decoder_weights(checkpoint, dtype, device)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                factor_set: FactorSet | None = None, last_only: bool = False) -> ForwardResult:
        """Logits for `input_ids` [B, T] after `cache`; the set follows the transformers rule unless given."""
        cache = cache or KVCache()
        past = cache.length
        total = past + input_ids.shape[1]
        chosen = factor_set or self.spec.factor_set_for_length(total)
        positions = torch.arange(past, total, device=self.device)
        cos, sin = self.spec.cos_sin(positions, chosen, self.dtype)
        x = self.weights.embed[input_ids.to(self.device)]
        new_cache = KVCache()
        for i, layer in enumerate(self.weights.layers):
            layer_cache = cache.layers[i] if cache.layers else None
            x, kv = self._block(x, layer, cos, sin, layer_cache, past, self.windows[i])
            new_cache.layers.append(kv)
        if last_only:
            x = x[:, -1:]
        logits = _rms_norm(x, self.weights.final_norm, self.geo.rms_norm_eps) @ self.weights.lm_head.T
        return ForwardResult(logits=logits, cache=new_cache, factor_set=chosen)

    def _block(self, x, w: LayerWeights, cos, sin, layer_cache, past, window):
        normed = _rms_norm(x, w.input_norm, self.geo.rms_norm_eps)
        h, kv = self._attention(normed, w, cos, sin, layer_cache, past, window)
        x = x + h
        hn = _rms_norm(x, w.post_norm, self.geo.rms_norm_eps)
        act = F.silu(_linear(hn, w.gate, w.bias(Role.GATE))) * _linear(hn, w.up, w.bias(Role.UP))
        return x + _linear(act, w.down, w.bias(Role.DOWN)), kv

    def _attention(self, x, w: LayerWeights, cos, sin, layer_cache, past, window):
        g = self.geo
        b, t, _ = x.shape
        q = _linear(x, w.q, w.bias(Role.Q)).view(b, t, g.num_heads, g.head_dim).transpose(1, 2)
        k = _linear(x, w.k, w.bias(Role.K)).view(b, t, g.num_kv_heads, g.head_dim).transpose(1, 2)
        v = _linear(x, w.v, w.bias(Role.V)).view(b, t, g.num_kv_heads, g.head_dim).transpose(1, 2)
        q, k = _rotate(q, cos, sin, g.rotary_dim), _rotate(k, cos, sin, g.rotary_dim)
        if layer_cache is not None:
            k = torch.cat([layer_cache[0], k], dim=2)
            v = torch.cat([layer_cache[1], v], dim=2)
        mask = _causal_mask(past, t, k.shape[2], window, x.device)
        rep = g.num_heads // g.num_kv_heads
        out = F.scaled_dot_product_attention(
            q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1), attn_mask=mask,
            scale=g.head_dim**-0.5,
        )
        out = out.transpose(1, 2).reshape(b, t, g.num_heads * g.head_dim)
        return _linear(out, w.o, w.bias(Role.O)), (k, v)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = x @ weight.T
    return y + bias if bias is not None else y


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """HF half-rotation on the first `rotary_dim` dims of each head; the rest pass through."""
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    out = rot * cos + rotated * sin
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def _causal_mask(past: int, t: int, total: int, window: int | None, device) -> torch.Tensor:
    q_pos = torch.arange(past, past + t, device=device)[:, None]
    k_pos = torch.arange(total, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= (q_pos - k_pos) < window
    return allowed
