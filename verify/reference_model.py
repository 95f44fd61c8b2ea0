"""An independent PyTorch decoder (LLaMA, Mistral, Qwen2, Phi-3, PhiMoE) whose rotary comes from the LongRoPE spec.

It shares no modeling code with transformers: weights are read from safetensors, cos/sin from
`LongRopeSpec.cos_sin`. float64 is the truth; float32 mimics transformers' order of operations.
The KV cache holds keys already rotated, so a decode step across L_orig mixes sets as transformers does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..formats.architectures import Role
from ..formats.factor_set import FactorSet
from ..formats.hf.checkpoint import Checkpoint, as_checkpoint
from ..formats.hf.rope_keys import rope_theta
from ..formats.spec import LongRopeSpec, plain_factors
from .reference_moe import moe_mlp
from ..formats.hf.weights import LayerWeights
from .reference_weights import DecoderWeights, load_decoder_weights


class KVCache:
    """Per layer keys (stored after rotation) and values in preallocated [B, n_kv, capacity, head_dim] buffers.

    A forward writes its new positions in place (no concatenation per chunk); the buffers double when a forward
    needs more room than `capacity`, so a caller that knows the case length allocates once.
    """

    def __init__(self, capacity: int = 0):
        self.capacity = capacity
        self.length = 0
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k/v [B, n_kv, t, d] at positions length..length+t of `layer`; return every key/value so far."""
        end = self.length + k.shape[2]
        if layer == len(self._keys):
            size = max(self.capacity, end)
            self._keys.append(k.new_empty(*k.shape[:2], size, k.shape[3]))
            self._values.append(v.new_empty(*v.shape[:2], size, v.shape[3]))
        elif end > self._keys[layer].shape[2]:
            self._keys[layer], self._values[layer] = (_grown(t, end) for t in (self._keys[layer], self._values[layer]))
        self._keys[layer][:, :, self.length:end] = k
        self._values[layer][:, :, self.length:end] = v
        return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]

    def advance(self, tokens: int) -> None:
        """Every layer has stored `tokens` more positions."""
        self.length += tokens


def _grown(buffer: torch.Tensor, needed: int) -> torch.Tensor:
    bigger = buffer.new_empty(*buffer.shape[:2], max(needed, 2 * buffer.shape[2]), buffer.shape[3])
    bigger[:, :, :buffer.shape[2]] = buffer
    return bigger


@dataclass
class ForwardResult:
    logits: torch.Tensor  # [B, T, vocab] (or [B, 1, vocab] with last_only); the cache is the one passed in
    cache: KVCache
    factor_set: FactorSet
    # MoE models: per logit row, the smallest routing margin over the layers (reference_moe.routing_margin)
    routing_margin: torch.Tensor | None = None


def plain_rope_spec(config: dict, rotary_dim: int) -> LongRopeSpec:
    """A spec that reproduces plain RoPE: all-ones factors, no attention factor, L_orig = max positions."""
    max_pos = int(config.get("max_position_embeddings") or 4096)
    ones = plain_factors(rotary_dim)
    return LongRopeSpec(ones, ones, max_pos, max_pos, rope_theta(config), rotary_dim, explicit_attention_factor=1.0)


class ReferenceDecoder:
    """Load once, run many forwards. `spec` overrides the config's LongRoPE numbers (to test wrong ones)."""

    def __init__(self, checkpoint: Checkpoint | str | Path, dtype: torch.dtype = torch.float64, device: str = "cpu",
                 spec: LongRopeSpec | None = None, moe_routing: str | None = None,
                 layer_devices: list[str] | None = None):
        """`moe_routing` overrides the architecture's MoE routing rule (to measure a runtime's own rule);
        `layer_devices` places layer i on layer_devices[i] (a model split over several GPUs)."""
        checkpoint = as_checkpoint(checkpoint)
        self.config, self.arch, self.geo = checkpoint.config, checkpoint.arch, checkpoint.geometry
        self.spec = spec or checkpoint.spec or plain_rope_spec(self.config, self.geo.rotary_dim)
        self.dtype, self.device = dtype, device
        self.windows = checkpoint.windows  # per layer, from the architecture's rule (transformers' layer_types)
        self.layer_devices = layer_devices or [device] * self.geo.num_layers
        self.weights: DecoderWeights = load_decoder_weights(checkpoint, dtype, device, self.layer_devices)
        self.norm = NORMS[self.arch.norm]
        self.moe_routing = moe_routing or self.arch.moe_routing

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, factor_set: FactorSet | None = None,
                last_only: bool = False, logit_rows: torch.Tensor | None = None) -> ForwardResult:
        """Logits for `input_ids` [B, T] after `cache` (which this forward extends in place); the set follows the
        transformers rule unless given. `logit_rows` (indices into T) or `last_only` limit which rows get logits."""
        cache = cache if cache is not None else KVCache()
        past = cache.length
        total = past + input_ids.shape[1]
        chosen = factor_set or self.spec.factor_set_for_length(total)
        positions = torch.arange(past, total, device=self.device)
        cos, sin = self.spec.cos_sin(positions, chosen, self.dtype)
        if last_only:
            logit_rows = torch.tensor([input_ids.shape[1] - 1])
        # the last layer only needs queries (and an MLP) at the rows that get logits; its keys/values cover all
        subset = logit_rows.cpu() if logit_rows is not None and len(logit_rows) < input_ids.shape[1] else None
        x = self.weights.embed[input_ids.to(self.device)]
        margins = []  # per MoE layer [B, T], or [B, rows] for the last layer when it ran at the logit rows only
        last = len(self.weights.layers) - 1
        for i, layer in enumerate(self.weights.layers):
            if x.device != layer.q.device:  # the next block of a split model: activations follow the weights
                x, cos, sin = (t.to(layer.q.device) for t in (x, cos, sin))
            x, layer_margin = self._block(x, layer, cos, sin, cache, i, past, self.windows[i],
                                          subset if i == last else None)
            if layer_margin is not None:
                margins.append(layer_margin.cpu())
        cache.advance(input_ids.shape[1])
        if logit_rows is not None and subset is None:
            x = x[:, logit_rows.to(x.device)]
        margin = _smallest_at(margins, logit_rows, input_ids.shape[1])
        w = self.weights
        logits = _linear(self.norm(x, w.final_norm, w.final_norm_bias, self.geo.rms_norm_eps), w.lm_head,
                         w.lm_head_bias)
        return ForwardResult(logits=logits, cache=cache, factor_set=chosen, routing_margin=margin)

    def _block(self, x, w: LayerWeights, cos, sin, cache: KVCache, layer: int, past: int, window: int | None,
               rows: torch.Tensor | None = None):
        """The layer's output and, for a sparse MoE MLP, each token's routing margin (None for a dense MLP); with
        `rows`, at those rows only (every position's keys and values are still cached)."""
        eps = self.geo.rms_norm_eps
        normed = self.norm(x, w.input_norm, w.bias(Role.INPUT_NORM), eps)
        attended = self._attention(normed, w, cos, sin, cache, layer, past, window, rows)
        x = (x if rows is None else x[:, rows.to(x.device)]) + attended
        hn = self.norm(x, w.post_norm, w.bias(Role.POST_NORM), eps)
        if w.router is not None:  # sparse MoE MLP (PhiMoE)
            out, margin = moe_mlp(hn, w.router, w.experts, self.geo.experts_per_token, self.geo.router_jitter_eps,
                                  self.moe_routing)
            return x + out, margin
        act = F.silu(_linear(hn, w.gate, w.bias(Role.GATE))) * _linear(hn, w.up, w.bias(Role.UP))
        return x + _linear(act, w.down, w.bias(Role.DOWN)), None

    def _attention(self, x, w: LayerWeights, cos, sin, cache: KVCache, layer: int, past: int, window: int | None,
                   rows: torch.Tensor | None = None):
        g = self.geo
        b, t, _ = x.shape
        k = _linear(x, w.k, w.bias(Role.K)).view(b, t, g.num_kv_heads, g.head_dim).transpose(1, 2)
        v = _linear(x, w.v, w.bias(Role.V)).view(b, t, g.num_kv_heads, g.head_dim).transpose(1, 2)
        keys, values = cache.store(layer, _rotate(k, cos, sin, g.rotary_dim), v)
        q_positions = torch.arange(past, past + t) if rows is None else past + rows
        if rows is not None:
            x, cos, sin = (a[..., rows.to(a.device), :] for a in (x, cos, sin))
        q = _linear(x, w.q, w.bias(Role.Q)).view(b, len(q_positions), g.num_heads, g.head_dim).transpose(1, 2)
        out = _grouped_attention(_rotate(q, cos, sin, g.rotary_dim), keys, values, q_positions, rows is None, window,
                                 g.head_dim**-0.5)
        out = out.transpose(1, 2).reshape(b, len(q_positions), g.num_heads * g.head_dim)
        return _linear(out, w.o, w.bias(Role.O))


def _grouped_attention(q, keys, values, q_positions: torch.Tensor, contiguous: bool, window: int | None,
                       scale: float) -> torch.Tensor:
    """Causal (and windowed) attention of queries at the sorted `q_positions` (`contiguous`: every position of
    this forward) over every cached key, with K/V heads shared by query groups inside SDPA (no copy). Keys a window
    hides from every query are sliced off, not masked; a prefill from position 0 and a single decode step need no
    mask at all, which lets SDPA use its fused kernels."""
    t, total = q.shape[2], keys.shape[2]
    if t == 0:
        return q
    past = int(q_positions[0])
    first = max(0, past + 1 - window) if window is not None else 0
    keys, values = keys[:, :, first:], values[:, :, first:]
    if contiguous and (window is None or window >= total) and (past == 0 or t == 1):
        return F.scaled_dot_product_attention(q, keys, values, is_causal=past == 0 and t > 1, scale=scale,
                                              enable_gqa=True)
    mask = _causal_mask(q_positions.to(q.device), first, total, window)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale, enable_gqa=True)


def _smallest_at(margins: list[torch.Tensor], rows: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """The smallest routing margin over the MoE layers at the logit `rows` (None for a dense model)."""
    if not margins:
        return None
    at_rows = [m[:, rows.cpu()] if rows is not None and m.shape[1] == length else m for m in margins]
    return torch.stack(at_rows).amin(0)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = x @ weight.T
    return y + bias if bias is not None else y


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    out = weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    return out + bias if bias is not None else out


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """nn.LayerNorm (PhiMoE): mean removed, biased variance, eps = the config's rms_norm_eps."""
    centred = x - x.mean(-1, keepdim=True)
    out = weight * (centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps))
    return out + bias if bias is not None else out


# Architecture.norm -> the norm function (weight, optional bias)
NORMS = {"rms": _rms_norm, "layer": _layer_norm}


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    """HF half-rotation on the first `rotary_dim` dims of each head; the rest pass through."""
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    out = rot * cos + rotated * sin
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def _causal_mask(q_positions: torch.Tensor, first: int, total: int, window: int | None) -> torch.Tensor:
    """bool [queries, total - first]: key k (from position `first`) is visible to query q iff k <= q and
    q - k < window."""
    q_pos = q_positions[:, None]
    k_pos = torch.arange(first, total, device=q_positions.device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= (q_pos - k_pos) < window
    return allowed
