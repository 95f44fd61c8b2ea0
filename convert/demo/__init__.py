"""The built-in demo and the seeded test-data generators (tiny checkpoints, tokenizers, example factors)."""
