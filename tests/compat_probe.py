"""Run in a side interpreter (transformers 4.x): print JSON with the rotary cos/sin and attention scaling
transformers computes for a checkpoint at the given lengths. Imports nothing from longrope_convert."""

import inspect
import json
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def main(folder: str, lengths: list[int]) -> None:
    kwargs = {"attn_implementation": "eager"}
    kwargs["dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"] = torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    rotary = model.model.rotary_emb
    out = {"transformers": transformers.__version__, "attention_scaling": getattr(rotary, "attention_scaling", None)}
    takes_seq_len = "seq_len" in inspect.signature(rotary.forward).parameters  # 4.x PhiMoE: forward(x, seq_len)
    for length in lengths:
        if takes_seq_len:
            cos, sin = rotary(torch.zeros(1, length, 1), seq_len=length)
        else:
            cos, sin = rotary(torch.zeros(1, length, 1), torch.arange(length)[None, :])
            cos, sin = cos[0], sin[0]
        out[str(length)] = {"cos": cos.tolist(), "sin": sin.tolist()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], [int(x) for x in sys.argv[2:]])
