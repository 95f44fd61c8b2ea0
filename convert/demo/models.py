"""The built-in demo: tiny seeded plain checkpoints -> example LongRoPE factors -> bake -> parity table.

Nothing is downloaded: the checkpoints and factors are generated here, seeded, so every run prints the same table.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...formats.architectures import ARCHITECTURES
from ...formats.errors import OutputPathError, UnsupportedArchitectureError
from ...formats.spec_inputs import SpecRequest
from ..bake import bake_checkpoint
from .example_factors import example_long_factors, example_short_factors
from .tiny_checkpoint import TinyShape, write_tiny_checkpoint
from .tiny_tokenizer import write_tiny_tokenizer

log = logging.getLogger(__name__)

SENTINEL = ".longrope-demo"
DEMO_L_ORIG = 256
DEMO_MAX = 1024
# HF class -> (partial rotary factor, tokenizer kind): one tiny model per registered architecture (a test fails when
# one is missing). Phi-3 runs with partial rotary to cover the Phi-4-mini layout too.
DEMO_MODELS = {
    "LlamaForCausalLM": (1.0, "sentencepiece"),
    "MistralForCausalLM": (1.0, "sentencepiece"),
    "Qwen2ForCausalLM": (1.0, "bpe"),
    "Phi3ForCausalLM": (0.75, "sentencepiece"),
    "PhimoeForCausalLM": (1.0, "sentencepiece"),
}


@dataclass(frozen=True)
class DemoModel:
    hf_class: str
    plain: Path
    baked: Path
    gguf_factor_sets: str = "pair"


@dataclass(frozen=True)
class DemoArtifacts:
    model: DemoModel
    gguf: Path
    onnx: Path


def prepare_workdir(workdir: Path) -> Path:
    """Create the demo folder, replacing an earlier demo run but never a folder the demo did not make."""
    if workdir.exists():
        if not (workdir / SENTINEL).exists():
            raise OutputPathError("exists and was not made by the demo; choose another --workdir", workdir)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / SENTINEL).write_text("made by longrope-convert demo; safe to delete\n")
    return workdir


def write_example_factor_files(folder: Path, rotary_dim: int, scale: float = DEMO_MAX / DEMO_L_ORIG,
                               ) -> tuple[Path, Path]:
    """The bundled example factors for a context extension by `scale` (the demo's by default), in the LongRoPE
    search's one-value-per-line layout."""
    long_path, short_path = folder / "long_factors.csv", folder / "short_factors.csv"
    long_path.write_text("".join(f"{v:.18e}\n" for v in example_long_factors(rotary_dim, scale)))
    short_path.write_text("".join(f"{v:.18e}\n" for v in example_short_factors(rotary_dim)))
    return long_path, short_path


def build_demo_models(workdir: Path, hf_classes: tuple[str, ...] | None = None) -> list[DemoModel]:
    """Plain tiny checkpoint + example factors + bake, for each demo architecture."""
    models = []
    for hf_class, (partial, tokenizer) in DEMO_MODELS.items():
        if hf_classes and hf_class not in hf_classes:
            continue
        arch = ARCHITECTURES[hf_class]
        # where the description names no llama.cpp arch that switches sets, the GGUF carries the long set only
        gguf_sets = "pair" if arch.gguf_pair_arch else "long"
        shape = TinyShape(original_max_position_embeddings=DEMO_L_ORIG, partial_rotary_factor=partial)
        base = workdir / arch.model_type
        plain = write_tiny_checkpoint(base / "plain", hf_class, shape, seed=1234)
        write_tiny_tokenizer(plain, tokenizer, shape.vocab_size)
        long_path, short_path = write_example_factor_files(base, int(shape.head_dim * partial))
        request = SpecRequest(long_factors=long_path, short_factors=short_path, max_position_embeddings=DEMO_MAX)
        baked = bake_checkpoint(plain, base / "longrope", request).output
        models.append(DemoModel(hf_class, plain, baked, gguf_sets))
    if hf_classes and not models:
        known = ", ".join(DEMO_MODELS)
        raise UnsupportedArchitectureError(f"--arch {', '.join(hf_classes)} matches no demo model ({known})")
    return models


def build_demo_artifacts(model: DemoModel) -> DemoArtifacts:
    """The shippable artifacts of one baked demo model: an f32 GGUF and an fp32 ONNX folder."""
    from ..export_onnx import export_onnx
    from ..hf_to_gguf import convert_hf_to_gguf

    base = model.baked.parent
    gguf = convert_hf_to_gguf(model.baked, base / "model-f32.gguf", outtype="f32",
                              factor_sets=model.gguf_factor_sets).output
    onnx = export_onnx(model.baked, base / "onnx").output
    return DemoArtifacts(model, gguf, onnx)
