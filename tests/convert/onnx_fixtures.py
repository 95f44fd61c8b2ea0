"""Shared pieces of the ONNX export tests: one fp32 export per demo architecture (L_orig 256 -> 1024)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from longrope_convert.formats.architectures import ARCHITECTURES

ARCHS = tuple(ARCHITECTURES)  # every registered architecture
L_ORIG = 256
SHORT_LEN = 200
LONG_LEN = 600
FP32_REL_L2 = 1e-4  # the bar for fp32 against the float64 reference


class LazyExports(dict):
    """hf_class -> (baked checkpoint, exported folder), each exported on first use: an architecture whose export
    fails (one being added) fails its own tests only."""

    def __init__(self, demo_models, root: Path, **options):
        super().__init__()
        self.demo_models, self.root, self.options = demo_models, root, options

    def __missing__(self, hf_class: str) -> tuple[Path, Path]:
        from longrope_convert.convert.export_onnx import export_onnx

        baked = self.demo_models[hf_class].baked
        self[hf_class] = (baked, export_onnx(baked, self.root / hf_class, **self.options).output)
        return self[hf_class]


@pytest.fixture(scope="session")
def onnx_exports(demo_models, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """hf_class -> (baked checkpoint, exported folder), default export (GroupQueryAttention)."""
    return LazyExports(demo_models, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="session")
def onnx_exports_standard(demo_models, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """hf_class -> (baked checkpoint, exported folder) with `--attention standard` (plain ONNX ops)."""
    return LazyExports(demo_models, tmp_path_factory.mktemp("onnx_standard"), attention="standard")


@pytest.fixture(params=["gqa", "standard"])
def exports_by_form(request, onnx_exports, onnx_exports_standard) -> dict[str, tuple[Path, Path]]:
    """Both attention forms, one after the other."""
    return onnx_exports if request.param == "gqa" else onnx_exports_standard


def token_ids(length: int, seed: int = 0, batch: int = 1, vocab: int = 512) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@functools.lru_cache(maxsize=None)
def reference(baked: Path):
    """The float64 reference decoder (independent of transformers and of our graph)."""
    from longrope_convert.verify.reference_model import ReferenceDecoder

    return ReferenceDecoder(baked, dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def session(folder: Path):
    from longrope_convert.verify.onnx_runner import OnnxDecoderSession

    return OnnxDecoderSession(folder)


def as_torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


@torch.inference_mode()
def transformers_decode_step(baked: Path, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """transformers' incremental decoding on a FRESH model: prefill `prefill` tokens, then one cached step."""
    from longrope_convert.verify.transformers_runner import load_transformers_model

    model = load_transformers_model(baked)
    first = model(input_ids=ids[:, :prefill], use_cache=True)
    step = model(input_ids=ids[:, prefill:prefill + 1], past_key_values=first.past_key_values, use_cache=True)
    return step.logits


def onnx_decode_step(folder: Path, ids: torch.Tensor, prefill: int) -> tuple[np.ndarray, list]:
    """Our graph: prefill, then one step fed the returned present as past."""
    sess = session(folder)
    _, present = sess.forward(ids[:, :prefill].numpy())
    return sess.forward(ids[:, prefill:prefill + 1].numpy(), present)
