"""`verify --device-map`: models too large for one device (a 70B checkpoint at 128k tokens).

The transformers target is placed by accelerate (`from_pretrained(device_map=...)`); the reference splits its
layers over the same visible devices in contiguous blocks (embedding with the first block, final norm and head with
the last), moving activations between them, so neither needs the whole model on one GPU.
"""

from __future__ import annotations

from pathlib import Path

from ..formats.errors import LongRopeError
from ..formats.json_io import read_json

NAMED_MAPS = ("auto", "balanced", "sequential")


class DeviceMapError(LongRopeError):
    """--device-map is neither a known strategy nor a readable JSON map."""


def parse_device_map(text: str | None) -> str | dict | None:
    """'auto' | 'balanced' | 'sequential', or a JSON file {module name: device} as accelerate takes it."""
    if text is None or text in NAMED_MAPS:
        return text
    path = Path(text)
    if not path.is_file():
        raise DeviceMapError(f"--device-map {text!r}: expected one of {', '.join(NAMED_MAPS)} or a JSON file")
    data = read_json(path, DeviceMapError)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in data.items()):
        raise DeviceMapError("a device map must be a JSON object of module name -> device", path)
    return data


def layer_devices(num_layers: int, device: str, device_map: str | dict | None) -> list[str]:
    """The device of each reference layer: one device without a map; with one, every visible CUDA device takes a
    contiguous block of layers (a CPU run keeps everything on the CPU, so the split path is tested there too)."""
    import torch

    if device_map is None or device != "cuda" or torch.cuda.device_count() < 2:
        return [device] * num_layers
    count = torch.cuda.device_count()
    return [f"cuda:{i * count // num_layers}" for i in range(num_layers)]
