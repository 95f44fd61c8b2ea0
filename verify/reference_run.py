"""The truth for verify: the independent ReferenceDecoder run chunk by chunk, with an explicit factor set.

Long prefills are fed through the reference's KV cache in query chunks with the set fixed for the whole case,
which is the same computation as one forward (every key rotated with the case's set) but keeps activations at
chunk size, and only the compared positions produce logits.
Decode cases use the cache the other way: each step picks its set by the total length, and cached keys keep
the rotation they were computed with (transformers' semantics, FACTS.md).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..formats.factor_set import FactorSet
from ..formats.hf.checkpoint import Checkpoint, as_checkpoint
from ..formats.spec import LongRopeSpec
from .memory import available_gpu_bytes, available_host_bytes
from .reference_model import KVCache, ReferenceDecoder

log = logging.getLogger(__name__)

MEMORY_SHARE = 0.25  # a prefill chunk's temporaries may take this share of the memory free when the case starts
MIN_CHUNK, MAX_CHUNK = 256, 16384
CACHE_SEMANTICS = (
    "decode steps reuse the KV cache; cached keys keep the rotation of the factor set active when they were "
    "computed (never re-rotated), as transformers' incremental decoding and the exported ONNX graphs do"
)


def choose_reference_dtype(device: str, checkpoint: Checkpoint | Path) -> torch.dtype:
    """float64 (the truth) on CPU; on CUDA float64 when the float64 weights fit in a third of free memory."""
    if device != "cuda":
        return torch.float64
    params = as_checkpoint(checkpoint).parameter_count
    if params * 8 * 3 < available_gpu_bytes():
        return torch.float64
    log.warning("float64 weights (%.1f GB) do not fit: the reference runs in float32", params * 8 / 1e9)
    return torch.float32


class ReferenceRunner:
    """Loads the reference once; answers prefill and decode cases with logits on the reference device."""

    def __init__(self, checkpoint: Checkpoint | Path, spec: LongRopeSpec, device: str = "cpu",
                 dtype: torch.dtype | None = None, layer_devices: list[str] | None = None):
        checkpoint = as_checkpoint(checkpoint)
        self.dtype = dtype or choose_reference_dtype(device, checkpoint)
        self.device = device
        self.model = ReferenceDecoder(checkpoint, dtype=self.dtype, device=device, spec=spec,
                                      layer_devices=layer_devices)
        self.spec = self.model.spec

    @contextlib.contextmanager
    def moe_routing(self, rule: str | None):
        """Run the reference with another MoE routing rule meanwhile (None: the architecture's own)."""
        own = self.model.moe_routing
        self.model.moe_routing = rule or own
        try:
            yield
        finally:
            self.model.moe_routing = own

    def max_tokens_in_memory(self, share: float = 0.4) -> int | None:
        """On CUDA: the longest case whose reference KV cache fits in `share` of free memory; None on CPU."""
        if self.device != "cuda":
            return None
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return int(share * available_gpu_bytes() / self.model.geo.kv_cache_bytes(1, itemsize))

    def chunk_size(self, length: int) -> int:
        """Query positions per prefill chunk, from the memory actually free (GPU or host).

        Per position a chunk holds its activations (hidden, q/k/v, MLP) and one row of the boolean mask over
        `length` keys; on CUDA float32/float64 SDPA has no fused GQA kernel, so the scores (heads x length) count
        too. CPU SDPA is a fused kernel in float64 as well: no score matrix is ever materialised there.
        """
        g = self.model.geo
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        activations = 4 * g.hidden_size + 2 * g.num_heads * g.head_dim + 3 * g.intermediate_size
        scores = 2 * g.num_heads * length if self.device == "cuda" else 0
        per_position = itemsize * (activations + scores) + length
        free = available_gpu_bytes() if self.device == "cuda" else available_host_bytes()
        return int(min(MAX_CHUNK, max(MIN_CHUNK, MEMORY_SHARE * free // per_position)))

    def prefill(self, ids: torch.Tensor, factor_set: FactorSet, positions: torch.Tensor) -> "TruthLogits":
        """Logits [len(positions), V] at the sorted `positions` of ids [1, T], every position rotated with
        `factor_set`; chunks without a compared position produce no logits at all."""
        length = ids.shape[1]
        chunk = self.chunk_size(length)
        cache, pieces, margins = KVCache(capacity=length), [], []
        positions = positions.to(torch.int64).cpu()
        for start in range(0, length, chunk):
            end = min(length, start + chunk)
            rows = positions[(positions >= start) & (positions < end)] - start
            result = self.model.forward(ids[:, start:end], cache, factor_set, logit_rows=rows)
            if len(rows):
                pieces.append(result.logits[0])
                margins.append(result.routing_margin)
        return TruthLogits(torch.cat(pieces, dim=0), _joined(margins))

    def decode(self, ids: torch.Tensor, prefill: int) -> "TruthLogits":
        """Prefill `prefill` tokens, then one cached step per remaining token: logits [steps, V], each step's set."""
        result = self.model.forward(ids[:, :prefill], KVCache(capacity=ids.shape[1]), last_only=True)
        cache, logits, sets, margins = result.cache, [], [], []
        for pos in range(prefill, ids.shape[1]):
            result = self.model.forward(ids[:, pos:pos + 1], cache)
            cache = result.cache
            logits.append(result.logits[0, -1])
            sets.append(result.factor_set)
            margins.append(result.routing_margin)
        return TruthLogits(torch.stack(logits), _joined(margins), tuple(sets))


@dataclass(frozen=True)
class TruthLogits:
    """The truth's logits at the compared rows, with what a comparison needs to explain a difference there."""

    logits: torch.Tensor  # [rows, V]
    routing_margin: torch.Tensor | None = None  # [rows], MoE models: the smallest margin over the layers
    sets: tuple[FactorSet, ...] = ()  # decode: each step's factor set


def _joined(margins: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Per-forward margins [1, rows] as one [rows] tensor; None for a dense model."""
    if not margins or margins[0] is None:
        return None
    return torch.cat([m.reshape(-1) for m in margins])


def decode_set_label(sets: list[FactorSet]) -> str:
    """"short", "long", or "short->long" when the steps cross L_orig."""
    names = []
    for s in sets:
        if not names or names[-1] != s.value:
            names.append(s.value)
    return "->".join(names)
