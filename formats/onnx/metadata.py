"""The LongRoPE spec and graph facts recorded in an ONNX model's metadata_props, and read back from them.

Values are JSON so floats round-trip exactly (`repr`-exact); keys are the constants below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..factor_set import FactorSet
from ..spec import LongRopeSpec
from .attention_forms import ATTENTION_FORMS, STANDARD

PREFIX = "longrope."
LONG_FACTOR = PREFIX + "long_factor"
SHORT_FACTOR = PREFIX + "short_factor"
ORIGINAL_MAX = PREFIX + "original_max_position_embeddings"
MAX_POSITIONS = PREFIX + "max_position_embeddings"
ROPE_THETA = PREFIX + "rope_theta"
ROTARY_DIM = PREFIX + "rotary_dim"
EXPLICIT_ATTENTION_FACTOR = PREFIX + "explicit_attention_factor"
# PhiMoE's short_mscale / long_mscale (written only when the spec has them; absent means None)
SET_ATTENTION_FACTORS = {"short_attention_factor": PREFIX + "short_attention_factor",
                         "long_attention_factor": PREFIX + "long_attention_factor"}
ATTENTION_FACTOR = PREFIX + "attention_factor"  # informational: what the graph multiplies cos/sin by
SELECTION = PREFIX + "selection"
ARCHITECTURE = PREFIX + "architecture"
NUM_LAYERS = PREFIX + "num_layers"
DTYPE = PREFIX + "dtype"
ATTENTION = PREFIX + "attention"  # attention_forms.GQA or STANDARD; absent in older exports (= standard)
START_TOKENS = PREFIX + "start_tokens"  # LongRoPE v1 n_hat; written only when > 0 (plain graphs stay as they were)

SELECTION_DYNAMIC = "dynamic: long iff past_sequence_length + sequence_length > original_max_position_embeddings"


def selection_text(frozen: FactorSet | None) -> str:
    """What the graph does; a frozen graph says which single set it baked."""
    return SELECTION_DYNAMIC if frozen is None else f"frozen: {frozen.value} at every length"


@dataclass(frozen=True)
class GraphFacts:
    """Non-spec facts the runner and verifier need."""

    architecture: str
    num_layers: int
    dtype: str  # fp32, fp16 or int4 (fp32 graph with MatMulNBits weights)
    selection: str
    attention: str = STANDARD  # how attention is computed (sizes verify's memory guard)

    @property
    def is_dynamic(self) -> bool:
        return self.selection.startswith("dynamic")


def spec_metadata(spec: LongRopeSpec, facts: GraphFacts) -> dict[str, str]:
    """metadata_props for an exported graph."""
    values = {
        LONG_FACTOR: list(spec.long_factor),
        SHORT_FACTOR: list(spec.short_factor),
        ORIGINAL_MAX: spec.original_max_position_embeddings,
        MAX_POSITIONS: spec.max_position_embeddings,
        ROPE_THETA: spec.rope_theta,
        ROTARY_DIM: spec.rotary_dim,
        EXPLICIT_ATTENTION_FACTOR: spec.explicit_attention_factor,
        ATTENTION_FACTOR: spec.attention_factor,
        SELECTION: facts.selection,
        ARCHITECTURE: facts.architecture,
        NUM_LAYERS: facts.num_layers,
        DTYPE: facts.dtype,
        ATTENTION: facts.attention,
    }
    if spec.start_tokens:
        values[START_TOKENS] = spec.start_tokens
    for field_name, key in SET_ATTENTION_FACTORS.items():
        if getattr(spec, field_name) is not None:
            values[key] = getattr(spec, field_name)
    return {key: json.dumps(value) for key, value in values.items()}


def read_metadata(model_path: Path) -> dict[str, str]:
    """metadata_props of an .onnx file, without loading external weight data."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def spec_from_metadata(props: dict[str, str], source: str = "model.onnx") -> LongRopeSpec:
    """The LongRoPE spec an exported graph was built from."""
    v = _decoded(props, source)
    return LongRopeSpec(
        long_factor=tuple(v[LONG_FACTOR]),
        short_factor=tuple(v[SHORT_FACTOR]),
        original_max_position_embeddings=int(v[ORIGINAL_MAX]),
        max_position_embeddings=int(v[MAX_POSITIONS]),
        rope_theta=float(v[ROPE_THETA]),
        rotary_dim=int(v[ROTARY_DIM]),
        explicit_attention_factor=v[EXPLICIT_ATTENTION_FACTOR],
        start_tokens=_start_tokens(props, source),
        **{name: _optional_number(props, key, source) for name, key in SET_ATTENTION_FACTORS.items()},
    )


def _optional_number(props: dict[str, str], key: str, source: str) -> float | None:
    if key not in props:
        return None
    try:
        value = json.loads(props[key])
    except json.JSONDecodeError:
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"metadata {key!r} must be a number", source)
    return float(value)


def _start_tokens(props: dict[str, str], source: str) -> int:
    """n_hat of the graph: absent (every graph without start tokens, older exports too) means 0."""
    if START_TOKENS not in props:
        return 0
    try:
        value = json.loads(props[START_TOKENS])
    except json.JSONDecodeError:
        value = None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"metadata {START_TOKENS!r} must be a non-negative integer", source)
    return value


def facts_from_metadata(props: dict[str, str], source: str = "model.onnx") -> GraphFacts:
    v = _decoded(props, source)
    try:
        attention = json.loads(props[ATTENTION]) if ATTENTION in props else STANDARD
    except json.JSONDecodeError:
        attention = None
    if attention not in ATTENTION_FORMS:
        raise ConfigError(f"metadata {ATTENTION!r} must be one of {', '.join(ATTENTION_FORMS)}", source)
    return GraphFacts(architecture=v[ARCHITECTURE], num_layers=int(v[NUM_LAYERS]), dtype=v[DTYPE],
                      selection=v[SELECTION], attention=attention)


def _decoded(props: dict[str, str], source: str) -> dict:
    keys = (LONG_FACTOR, SHORT_FACTOR, ORIGINAL_MAX, MAX_POSITIONS, ROPE_THETA, ROTARY_DIM,
            EXPLICIT_ATTENTION_FACTOR, SELECTION, ARCHITECTURE, NUM_LAYERS, DTYPE)
    missing = [k for k in keys if k not in props]
    if missing:
        raise ConfigError(f"not a longrope-convert ONNX export: metadata key {missing[0]!r} is missing", source)
    try:
        return {k: json.loads(props[k]) for k in keys}
    except json.JSONDecodeError:
        raise ConfigError("longrope metadata is not valid JSON", source) from None
