"""Pipelines (bake, hf-to-gguf, export-onnx, verify, demo) and the click CLI."""
