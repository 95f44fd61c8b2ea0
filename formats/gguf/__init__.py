"""GGUF: llama.cpp layouts, tensors, dtypes, rope keys, vocabulary, streaming writer and reader."""
