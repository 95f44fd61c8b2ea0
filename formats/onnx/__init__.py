"""ONNX: the LongRoPE decoder graph built from safetensors with onnx.helper, its metadata and genai config."""
