"""Run in a side interpreter (transformers 4.x): print JSON with the rotary cos/sin and attention scaling
transformers computes for a checkpoint at the given lengths. Imports nothing from longrope_convert."""

import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def main(folder: str, lengths: list[int]) -> None:
    kwargs = {"attn_implementation": "eager"}
    kwargs["dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    out = {"transformers": transformers.__version__, "attention_scaling": model.model.rotary_emb.attention_scaling}
    for length in lengths:
        positions = torch.arange(length)[None, :]
        cos, sin = model.model.rotary_emb(torch.zeros(1, length, 1), positions)
        out[str(length)] = {"cos": cos[0].tolist(), "sin": sin[0].tolist()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], [int(x) for x in sys.argv[2:]])
