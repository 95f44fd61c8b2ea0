"""The two attention forms an exported graph can use; plain constants so the CLI can name them without onnx.

- `gqa` (default): onnxruntime's fused contrib op `com.microsoft.GroupQueryAttention`. Memory grows linearly with
  the length (no [heads, T, T] scores); runs on onnxruntime only (it is what onnxruntime-genai's builder emits).
  Queries and keys reach it already rotated by our LongRoPE cos/sin (`do_rotary=0`), so the factor switch and the
  never-re-rotated cache are exactly those of the standard form. It ignores left padding (attention_mask zeros
  before the tokens): padded batches need the standard form.
- `standard`: plain ONNX ops (any runtime, padded batches), materialising float32 scores [B, heads, S, T].
"""

from __future__ import annotations

GQA = "gqa"
STANDARD = "standard"
ATTENTION_FORMS = (GQA, STANDARD)
DEFAULT_ATTENTION = GQA
