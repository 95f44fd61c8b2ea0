"""The LongRoPE spec and every on-disk format (factor files, HF configs, checkpoints, GGUF, ONNX)."""
