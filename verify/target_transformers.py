"""Target: transformers itself, a fresh AutoModelForCausalLM loaded from the baked config (no remote code).

Prefill cases keep only the compared positions' logits (`logits_to_keep` with an index tensor); decode cases prefill with the cache,
then feed single tokens through it (transformers' own incremental decoding). Attention is SDPA on both
devices ("longrope_sdpa": transformers' own, with KV heads expanded on CUDA so float32 GQA never falls back to
the math kernel's [heads, T, T] scores): memory-efficient at long lengths, and as close to the float64
reference as eager (~1.5e-6 relative in float32 on the tiny models).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch

from .cases import Case
from .divergences import transformers_divergence
from .target_base import SequenceRuleTarget
from .targets import TargetContext, TargetOutput
from .transformers_attention import ATTENTION_NAME
from .transformers_runner import load_transformers_model

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@functools.cache
def cache_argument(model_class: type) -> str:
    """The KV-cache keyword of `model_class.forward` (and attribute of its output): `cache` from transformers
    5.24 on, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


class TransformersTarget(SequenceRuleTarget):
    kind = "transformers"

    def __init__(self, context: TargetContext):
        super().__init__(context.spec)
        self.precision = context.dtype
        self.name = f"transformers ({context.dtype})"
        self.path = str(context.src)
        self.model = load_transformers_model(context.src, TORCH_DTYPES[context.dtype], context.device,
                                            ATTENTION_NAME, context.device_map)
        self.device = self.model.get_input_embeddings().weight.device  # the first device of a split model
        self.hf_class = context.checkpoint.arch.hf_class

    @classmethod
    def open(cls, path: Path | None, context: TargetContext) -> "TransformersTarget":
        return cls(context)

    @torch.inference_mode()
    def run(self, case: Case, input_ids: torch.Tensor, positions: torch.Tensor) -> TargetOutput:
        import transformers

        ids = input_ids.to(self.device)
        diverges = transformers_divergence(self.hf_class, transformers.__version__, self.spec, case)
        if case.is_decode:
            return TargetOutput(self._decode(ids, case.prefill), self.step_sets_label(case),
                                expected_divergence=diverges)
        # logits_to_keep takes an index tensor (transformers >= 4.50): logits only at the compared positions
        out = self.model(input_ids=ids, use_cache=False, logits_to_keep=positions.to(self.device))
        return TargetOutput(out.logits[0], self.expected_set(case).value, expected_divergence=diverges)

    def _decode(self, ids: torch.Tensor, prefill: int) -> torch.Tensor:
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40): use
        # whichever name this version's forward takes, in and out
        name = cache_argument(type(self.model))
        out = self.model(input_ids=ids[:, :prefill], use_cache=True, logits_to_keep=1)
        past, steps = getattr(out, name), []
        for pos in range(prefill, ids.shape[1]):
            out = self.model(input_ids=ids[:, pos:pos + 1], use_cache=True, **{name: past})
            past = getattr(out, name)
            steps.append(out.logits[0, -1])
        return torch.stack(steps)

    def close(self) -> None:
        del self.model
        if self.device == "cuda":
            torch.cuda.empty_cache()

