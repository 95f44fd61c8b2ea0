"""A checkpoint's weights as numpy arrays in one canonical layout, whatever the architecture stores.

Fused projections (Phi-3's qkv_proj and gate_up_proj) are split into q/k/v and gate/up views, matrices stay in
HF orientation ([out, in]), biases are present or None. The reference decoder and the ONNX exporter both read
through here, so neither knows how an architecture names or fuses its tensors. Tensors are memory-mapped from
their files (no torch); BF16 becomes float32 exactly, F64 stays float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable, Generic, TypeVar

import numpy as np

from ..architectures import Role, TensorSlot, role_shape
from ..errors import CheckpointError
from .checkpoint import Checkpoint
from .tensor_index import TensorInfo, bf16_bits_to_float32

Array = TypeVar("Array")  # numpy arrays here; the reference decoder maps them to torch tensors

# A fused role and the split roles it holds, stacked by rows in this order.
FUSED = {Role.QKV: (Role.Q, Role.K, Role.V), Role.GATE_UP: (Role.GATE, Role.UP)}


def read_array(info: TensorInfo) -> np.ndarray:
    """One tensor, memory-mapped from its file: F32/F16/F64 as stored, BF16 as float32."""
    raw = np.memmap(info.file, dtype=np.uint8, mode="r", offset=info.begin, shape=(info.end - info.begin,))
    views = {"F32": np.float32, "F16": np.float16, "F64": np.float64}
    if info.dtype in views:
        array = raw.view(views[info.dtype])
    elif info.dtype == "BF16":
        array = bf16_bits_to_float32(raw.view(np.uint16))
    else:
        raise CheckpointError(f"tensor {info.name!r} has dtype {info.dtype}, expected a float type", info.file)
    return array.reshape(info.shape)


@dataclass
class LayerWeights(Generic[Array]):
    """One decoder layer in the canonical layout: split projections, [out, in], optional biases by role."""

    input_norm: Array
    post_norm: Array
    q: Array
    k: Array
    v: Array
    o: Array
    gate: Array | None  # None in a sparse MoE layer (its MLP is `router` + `experts`)
    up: Array | None
    down: Array | None
    biases: dict[Role, Array] = field(default_factory=dict)  # among q, k, v, o, gate, up, down and the norms
    router: Array | None = None  # [num_experts, hidden]
    experts: list[dict[Role, Array]] = field(default_factory=list)  # per expert: EXPERT_GATE/UP/DOWN, [out, in]

    def bias(self, role: Role) -> Array | None:
        return self.biases.get(role)

    def mapped(self, convert: Callable) -> "LayerWeights":
        """The same layer with every array passed through `convert` (absent ones stay None)."""
        return replace(self, **{f.name: _mapped(getattr(self, f.name), convert) for f in fields(self)})


def _mapped(value, convert: Callable):
    if value is None:
        return None
    if isinstance(value, dict):
        return {key: _mapped(v, convert) for key, v in value.items()}
    if isinstance(value, list):
        return [_mapped(v, convert) for v in value]
    return convert(value)


class WeightReader:
    """The checkpoint's tensors by role (shapes were checked when the checkpoint was opened)."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.tensors = checkpoint.tensors
        self.slots = checkpoint.arch.tensor_slots(checkpoint.geometry)

    def _read(self, slot: TensorSlot) -> np.ndarray | None:
        info = self.tensors.get(slot.name)
        if info is None:
            if slot.required:
                raise CheckpointError(f"tensor {slot.name!r} is missing from the checkpoint", self.checkpoint.folder)
            return None
        return read_array(info)

    def _global(self, role: Role, bias: bool = False) -> np.ndarray | None:
        """A global weight (or its bias: None where the architecture stores none)."""
        return next((self._read(s) for s in self.slots if s.layer is None and s.role is role and s.is_bias == bias),
                    None)

    def final_norm_bias(self) -> np.ndarray | None:
        return self._global(Role.FINAL_NORM, bias=True)

    def lm_head_bias(self) -> np.ndarray | None:
        return self._global(Role.LM_HEAD, bias=True)

    def embedding(self) -> np.ndarray:
        return self._global(Role.EMBED)

    def final_norm(self) -> np.ndarray:
        return self._global(Role.FINAL_NORM)

    @property
    def ties_lm_head(self) -> bool:
        """True when the output head is the embedding (tied, and no head stored)."""
        return not any(s.role is Role.LM_HEAD and s.name in self.tensors for s in self.slots)

    def lm_head(self) -> np.ndarray:
        """[vocab, hidden]; the embedding when the checkpoint ties them and stores no head."""
        return self.embedding() if self.ties_lm_head else self._global(Role.LM_HEAD)

    def layer(self, i: int) -> LayerWeights:
        weights: dict[Role, np.ndarray] = {}
        biases: dict[Role, np.ndarray] = {}
        experts: list[dict[Role, np.ndarray]] = [{} for _ in range(self.checkpoint.geometry.num_experts)]
        for slot in (s for s in self.slots if s.layer == i):
            array = self._read(slot)
            if array is None:
                continue
            if slot.expert is not None:
                experts[slot.expert][slot.role] = array
            else:
                _put(biases if slot.is_bias else weights, slot.role, array, self.checkpoint)
        return LayerWeights(
            input_norm=weights[Role.INPUT_NORM], post_norm=weights[Role.POST_NORM],
            q=weights[Role.Q], k=weights[Role.K], v=weights[Role.V], o=weights[Role.O],
            gate=weights.get(Role.GATE), up=weights.get(Role.UP), down=weights.get(Role.DOWN), biases=biases,
            router=weights.get(Role.ROUTER), experts=experts,
        )


def _put(into: dict[Role, np.ndarray], role: Role, array: np.ndarray, checkpoint: Checkpoint) -> None:
    """Store `array` under its role, split into row views when the role is fused."""
    parts = FUSED.get(role)
    if parts is None:
        into[role] = array
        return
    sizes = [role_shape(part, checkpoint.geometry)[0] for part in parts]
    for part, piece in zip(parts, np.split(array, np.cumsum(sizes)[:-1], axis=0)):
        into[part] = piece

