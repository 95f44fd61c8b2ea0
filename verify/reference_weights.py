"""The checkpoint's weights as torch tensors for the reference decoder, read through formats' canonical reader.

`formats/hf/weights.py` undoes every architecture difference (fused q/k/v and gate/up, biases), so the decoder
has one code path and no knowledge of tensor names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..formats.hf.checkpoint import Checkpoint
from ..formats.hf.weights import LayerWeights, WeightReader


@dataclass
class DecoderWeights:
    embed: torch.Tensor
    layers: list[LayerWeights[torch.Tensor]]
    final_norm: torch.Tensor
    lm_head: torch.Tensor
    final_norm_bias: torch.Tensor | None = None  # LayerNorm architectures (PhiMoE)
    lm_head_bias: torch.Tensor | None = None


def load_decoder_weights(checkpoint: Checkpoint, dtype: torch.dtype, device: str,
                         layer_devices: list[str] | None = None) -> DecoderWeights:
    """Every weight as a torch tensor; layer i on layer_devices[i] (a model split over GPUs), the embedding with
    the first layer and the final norm and head with the last."""
    reader = WeightReader(checkpoint)
    devices = layer_devices or [device] * checkpoint.geometry.num_layers
    first, last = (functools.partial(_tensor, device=d, dtype=dtype) for d in (devices[0], devices[-1]))
    layers = [reader.layer(i).mapped(functools.partial(_tensor, device=devices[i], dtype=dtype))
              for i in range(checkpoint.geometry.num_layers)]
    embed = first(reader.embedding())
    lm_head = embed.to(devices[-1]) if reader.ties_lm_head else last(reader.lm_head())
    return DecoderWeights(embed=embed, layers=layers, final_norm=last(reader.final_norm()), lm_head=lm_head,
                          final_norm_bias=last(reader.final_norm_bias()), lm_head_bias=last(reader.lm_head_bias()))


def _tensor(array: np.ndarray | None, device: str, dtype: torch.dtype) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.array(array)).to(device=device, dtype=dtype)
