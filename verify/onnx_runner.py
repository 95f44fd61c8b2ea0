"""Run an exported decoder folder with onnxruntime: builds attention_mask and position_ids, carries the KV cache.

Interface shared with the verifier: `OnnxDecoderSession(folder).forward(input_ids, past)` -> (logits float32
[B, T, V], present (key, value) per layer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formats.errors import CheckpointError
from ..formats.onnx import names as N
from ..formats.onnx.metadata import facts_from_metadata, spec_from_metadata

ORT_TO_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16}

KVPair = tuple[np.ndarray, np.ndarray]


class OnnxDecoderSession:
    """One onnxruntime session over OUTDIR/model.onnx (CPU unless `providers` says otherwise)."""

    def __init__(self, folder: Path, providers: list[str] | None = None):
        import onnxruntime as ort

        self.folder = Path(folder)
        path = self.folder / N.MODEL_FILE
        if not path.is_file():
            raise CheckpointError(f"no {N.MODEL_FILE} found", self.folder)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.spec = spec_from_metadata(self.metadata, str(path))
        self.facts = facts_from_metadata(self.metadata, str(path))
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.has_past: bool = N.past_key(0) in inputs
        self.num_layers: int = self.facts.num_layers
        self._past_dtype = ORT_TO_NUMPY[inputs[N.past_key(0)].type] if self.has_past else None
        self._past_shape = inputs[N.past_key(0)].shape if self.has_past else None
        self._outputs = [N.LOGITS] + ([name for i in range(self.num_layers)
                                       for name in (N.present_key(i), N.present_value(i))] if self.has_past else [])

    def empty_past(self, batch: int) -> list[KVPair]:
        """Zero-length caches for a first forward."""
        _, kv_heads, _, head_dim = self._past_shape
        empty = np.zeros((batch, kv_heads, 0, head_dim), dtype=self._past_dtype)
        return [(empty, empty) for _ in range(self.num_layers)]

    def forward(self, input_ids: np.ndarray, past: list[KVPair] | None = None) -> tuple[np.ndarray, list[KVPair]]:
        """Logits [B, T, V] float32 and the present (key, value) per layer (empty without a cache)."""
        input_ids = np.asarray(input_ids, dtype=np.int64)
        batch, length = input_ids.shape
        if past is not None and not self.has_past:
            raise ValueError("this graph was exported with --no-past; it takes no KV cache")
        if self.has_past and past is None:
            past = self.empty_past(batch)
        past_len = past[0][0].shape[2] if past else 0
        feeds = {
            N.INPUT_IDS: input_ids,
            N.ATTENTION_MASK: np.ones((batch, past_len + length), dtype=np.int64),
            N.POSITION_IDS: np.broadcast_to(np.arange(past_len, past_len + length, dtype=np.int64),
                                            (batch, length)).copy(),
        }
        for i, (k, v) in enumerate(past or []):
            feeds[N.past_key(i)], feeds[N.past_value(i)] = k, v
        results = self.session.run(self._outputs, feeds)
        logits = results[0].astype(np.float32, copy=False)
        present = [(results[1 + 2 * i], results[2 + 2 * i]) for i in range(self.num_layers)] if self.has_past else []
        return logits, present
