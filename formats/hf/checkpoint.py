"""A checkpoint opened once: config, architecture, geometry, LongRoPE spec, per-layer windows and the tensor index.

Every command (bake, hf-to-gguf, export-onnx, inspect, verify) starts from `open_checkpoint`, so config.json is
read once and every tensor header is checked once, against the architecture description, before anything is
written or loaded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..architectures import IGNORED_SUFFIXES, Architecture, TensorSlot, architecture_for
from ..errors import CheckpointError, ConfigError
from ..input_paths import confined_file
from ..spec import LongRopeSpec
from .config import read_config, spec_from_config
from .geometry import ModelGeometry, geometry
from .rope_keys import check_rope_numbers
from .tensor_index import TensorInfo, checkpoint_tensors

CONFIG_NAME = "config.json"
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    config: dict
    arch: Architecture
    geometry: ModelGeometry
    spec: LongRopeSpec | None  # None: plain RoPE (not baked yet)
    windows: tuple[int | None, ...]  # sliding window per layer (None: full attention)
    tensors: dict[str, TensorInfo]

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def source(self) -> str:
        """How errors name the config."""
        return str(self.config_path)

    def require_spec(self) -> LongRopeSpec:
        """The LongRoPE spec, or a one-line error telling the user to bake first."""
        if self.spec is None:
            raise ConfigError("not a LongRoPE checkpoint (rope type is not longrope/su): run "
                              "`longrope-convert bake` first", self.config_path)
        return self.spec

    @property
    def parameter_count(self) -> int:
        """Values in every tensor of the checkpoint."""
        return sum(math.prod(info.shape) for info in self.tensors.values())

    def slots(self) -> dict[str, TensorSlot]:
        """The architecture's tensors by HF name, for this geometry."""
        return {s.name: s for s in self.arch.tensor_slots(self.geometry)}


def open_checkpoint(folder: str | Path) -> Checkpoint:
    """Read and check config.json and every safetensors header; no tensor data is loaded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError("source checkpoint folder not found", folder)
    config = read_config(confined_file(folder, CONFIG_NAME, ConfigError))
    source = str(folder / CONFIG_NAME)
    arch = architecture_for(config, source)
    geo = geometry(config, source)
    check_rope_numbers(config, source)
    tensors = checkpoint_tensors(folder)
    check_layer_count(arch, geo, tensors, source)  # before anything sized by the layer count is built
    try:
        windows = arch.layer_windows(config, geo.num_layers)
    except ConfigError as exc:
        raise ConfigError(str(exc), source) from None
    spec = spec_from_config(config, source)
    check_tensors_match(arch, geo, tensors, folder)
    return Checkpoint(folder, config, arch, geo, spec, windows, tensors)


def check_layer_count(arch: Architecture, geo: ModelGeometry, tensors: dict[str, TensorInfo], source: str) -> None:
    """config.json's layer count must not exceed the layers the weights hold: checked from the tensor names
    alone, so a corrupt `num_hidden_layers` (say 10**7) is refused without building a slot per layer."""
    pattern = re.compile(re.escape(arch.layer_prefix).replace(re.escape("{i}"), r"(\d+)") + r"\.")
    present = {m.group(1) for name in tensors if (m := pattern.match(name))}
    if geo.num_layers > len(present):
        raise ConfigError(f"'num_hidden_layers' is {geo.num_layers} but the weights hold {len(present)} layers",
                          source)


def check_tensors_match(arch: Architecture, geo: ModelGeometry, tensors: dict[str, TensorInfo], folder: Path) -> None:
    """Every required tensor present with the shape the config implies, and no tensor the architecture lacks."""
    slots = {s.name: s for s in arch.tensor_slots(geo)}
    for name, info in tensors.items():
        slot = slots.get(name)
        if slot is None:
            if name.endswith(IGNORED_SUFFIXES):
                continue
            raise CheckpointError(f"tensor {name!r} is not part of a {arch.hf_class} with {geo.num_layers} layers",
                                  info.file)
        if tuple(info.shape) != slot.shape:
            raise CheckpointError(f"tensor {name!r} has shape {list(info.shape)}, config.json implies "
                                  f"{list(slot.shape)}", info.file)
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"tensor {name!r} has dtype {info.dtype}; weights must be F32, F16, BF16 or F64",
                                  info.file)
    missing = [s.name for s in slots.values() if s.required and s.name not in tensors]
    if missing:
        raise CheckpointError(f"{len(missing)} tensor(s) missing for {arch.hf_class}, first {missing[0]!r}", folder)



def as_checkpoint(checkpoint: Checkpoint | str | Path) -> Checkpoint:
    """An opened checkpoint as it is, or a folder opened now (for callers that take either)."""
    return checkpoint if isinstance(checkpoint, Checkpoint) else open_checkpoint(checkpoint)
