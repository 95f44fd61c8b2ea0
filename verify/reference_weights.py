"""The checkpoint's weights as torch tensors for the reference decoder, read through formats' canonical reader.

`formats/hf/weights.py` undoes every architecture difference (fused q/k/v and gate/up, biases), so the decoder
has one code path and no knowledge of tensor names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..formats.architectures import Role
from ..formats.hf.checkpoint import Checkpoint
from ..formats.hf.weights import LayerWeights as ArrayLayer
from ..formats.hf.weights import WeightReader


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    biases: dict[Role, torch.Tensor] = field(default_factory=dict)

    def bias(self, role: Role) -> torch.Tensor | None:
        return self.biases.get(role)


@dataclass
class DecoderWeights:
    embed: torch.Tensor
    layers: list[LayerWeights]
    final_norm: torch.Tensor
    lm_head: torch.Tensor


def load_decoder_weights(checkpoint: Checkpoint, dtype: torch.dtype, device: str) -> DecoderWeights:
    reader = WeightReader(checkpoint)

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(array)).to(device=device, dtype=dtype)

    def layer(w: ArrayLayer) -> LayerWeights:
        return LayerWeights(
            input_norm=tensor(w.input_norm), post_norm=tensor(w.post_norm),
            q=tensor(w.q), k=tensor(w.k), v=tensor(w.v), o=tensor(w.o),
            gate=tensor(w.gate), up=tensor(w.up), down=tensor(w.down),
            biases={role: tensor(b) for role, b in w.biases.items()},
        )

    layers = [layer(reader.layer(i)) for i in range(checkpoint.geometry.num_layers)]
    embed = tensor(reader.embedding())
    lm_head = embed if reader.ties_lm_head else tensor(reader.lm_head())
    return DecoderWeights(embed=embed, layers=layers, final_norm=tensor(reader.final_norm()), lm_head=lm_head)
