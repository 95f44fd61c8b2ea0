"""Hugging Face checkpoints: config.json, the safetensors tensor index, weights, the model card."""
