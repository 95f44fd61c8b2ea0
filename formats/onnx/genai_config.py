"""genai_config.json so onnxruntime-genai can load an exported folder as a plain decoder.

The rope (both LongRoPE sets and the switch) lives inside our graph, so genai needs no rope settings; the KV
buffers are not shared because the graph concatenates past and current keys.
"""

from __future__ import annotations

from ..hf.checkpoint import Checkpoint
from . import names as N
from .decoder import DecoderGraphOptions


def genai_config(source: Checkpoint, options: DecoderGraphOptions) -> dict:
    geo, config, spec = source.geometry, source.config, source.require_spec()
    inputs = {"input_ids": N.INPUT_IDS, "attention_mask": N.ATTENTION_MASK, "position_ids": N.POSITION_IDS}
    outputs = {"logits": N.LOGITS}
    if options.with_past:
        inputs |= {"past_key_names": N.past_key(0).replace(".0.", ".%d."),
                   "past_value_names": N.past_value(0).replace(".0.", ".%d.")}
        outputs |= {"present_key_names": N.present_key(0).replace(".0.", ".%d."),
                    "present_value_names": N.present_value(0).replace(".0.", ".%d.")}
    return {
        "model": {
            "type": source.arch.model_type,
            "bos_token_id": config.get("bos_token_id"),
            "eos_token_id": config.get("eos_token_id"),
            "pad_token_id": config.get("pad_token_id") if config.get("pad_token_id") is not None else 0,
            "vocab_size": geo.vocab_size,
            "context_length": spec.max_position_embeddings,
            "decoder": {
                "filename": N.MODEL_FILE,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "head_size": geo.head_dim,
                "hidden_size": geo.hidden_size,
                "num_attention_heads": geo.num_heads,
                "num_key_value_heads": geo.num_kv_heads,
                "num_hidden_layers": geo.num_layers,
                "inputs": inputs,
                "outputs": outputs,
            },
        },
        "search": {
            "max_length": spec.max_position_embeddings,
            "past_present_share_buffer": False,
            "do_sample": False,
            "num_beams": 1,
            "num_return_sequences": 1,
            "min_length": 0,
            "early_stopping": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }
