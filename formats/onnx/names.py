"""Names of the exported decoder's inputs, outputs and files: the Optimum / onnxruntime-genai convention."""

from __future__ import annotations

MODEL_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx.data"
GENAI_CONFIG_FILE = "genai_config.json"

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
POSITION_IDS = "position_ids"
LOGITS = "logits"

# Symbolic dimension names shared by every input/output.
BATCH = "batch_size"
SEQUENCE = "sequence_length"
PAST_SEQUENCE = "past_sequence_length"
TOTAL_SEQUENCE = "total_sequence_length"  # past + current


def past_key(layer: int) -> str:
    return f"past_key_values.{layer}.key"


def past_value(layer: int) -> str:
    return f"past_key_values.{layer}.value"


def present_key(layer: int) -> str:
    return f"present.{layer}.key"


def present_value(layer: int) -> str:
    return f"present.{layer}.value"
