"""Model hyperparameters as llama.cpp's converter writes them (the rope keys live in spec_keys)."""

from __future__ import annotations

import gguf

from ..hf.geometry import ModelGeometry
from .layouts import GgufLayout


def add_model_hparams(writer: gguf.GGUFWriter, config: dict, geo: ModelGeometry, layout: GgufLayout,
                      file_type: gguf.LlamaFileType, name: str) -> None:
    """Shapes, norms and file type: what llama.cpp's loader reads for `layout.arch`."""
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_block_count(geo.num_layers)
    writer.add_embedding_length(geo.hidden_size)
    writer.add_feed_forward_length(geo.intermediate_size)
    writer.add_head_count(geo.num_heads)
    writer.add_head_count_kv(geo.num_kv_heads)
    writer.add_layer_norm_rms_eps(geo.rms_norm_eps)
    if layout.arch == gguf.MODEL_ARCH.LLAMA:
        writer.add_vocab_size(geo.vocab_size)
    if "head_dim" in config or geo.head_dim * geo.num_heads != geo.hidden_size:
        writer.add_key_length(geo.head_dim)
        writer.add_value_length(geo.head_dim)
    if layout.moe:
        writer.add_expert_count(geo.num_experts)
        writer.add_expert_used_count(geo.experts_per_token)
    if layout.arch == gguf.MODEL_ARCH.PHI3:
        # llama.cpp's converter writes 0 for "no sliding window" (it tells Phi-4 from Phi-3 this way)
        writer.add_sliding_window(int(config.get("sliding_window") or 0))
