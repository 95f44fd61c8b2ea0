"""Reading a GGUF back: its LongRoPE spec (our exact keys, else llama.cpp's tensors and keys) and the facts a
runner needs (L_orig, weight precision, whether it holds one factor set, or no factor tensors at all)."""

from __future__ import annotations

import collections
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import gguf

from ..errors import CheckpointError
from ..factor_set import FactorSet
from ..spec import LongRopeSpec
from .spec_keys import (
    KEY_ATTENTION,
    KEY_EXPLICIT,
    KEY_FACTOR_SETS,
    KEY_L_ORIG,
    KEY_LONG,
    KEY_MAX,
    KEY_ROTARY_DIM,
    KEY_SET_ATTENTION,
    KEY_SHORT,
    KEY_THETA,
    V,
)

# gguf.LlamaFileType name -> precision name (verify's tolerance key); every other type is "quantized".
FILE_TYPE_PRECISION = {"ALL_F32": "f32", "MOSTLY_F16": "f16", "MOSTLY_BF16": "bf16", "MOSTLY_Q8_0": "q8_0",
                       "MOSTLY_Q4_0": "q4_0", "MOSTLY_Q4_K_M": "q4_k_m", "MOSTLY_Q5_K_M": "q5_k_m",
                       "MOSTLY_Q6_K": "q6_k"}
TENSOR_TYPE_PRECISION = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0"}
T = gguf.MODEL_TENSOR
PAIR_TENSORS = tuple(gguf.TENSOR_NAMES[t] + ".weight" for t in (T.ROPE_FACTORS_LONG, T.ROPE_FACTORS_SHORT))
FREQS_TENSOR = gguf.TENSOR_NAMES[T.ROPE_FREQS] + ".weight"


def read_gguf_spec(path: str | Path) -> LongRopeSpec | None:
    """The LongRoPE spec a GGUF carries: our keys when present, else llama.cpp's factor tensors and rope keys
    (e.g. a Phi-3 GGUF made by llama.cpp's converter); None when it has neither."""
    return _spec(*open_gguf(Path(path)))


def read_gguf_longrope(path: str | Path) -> tuple[LongRopeSpec | None, str | None]:
    """read_gguf_spec and missing_factor_reason of the GGUF at `path`, from one parse of the file."""
    reader, fields = open_gguf(Path(path))
    return _spec(reader, fields), missing_factor_reason(reader, fields)


def _spec(reader: gguf.GGUFReader, fields: dict) -> LongRopeSpec | None:
    if KEY_LONG in fields:
        return _spec_from_our_keys(fields)
    return _spec_from_llama_cpp(reader, fields)


def open_gguf(path: Path) -> tuple[gguf.GGUFReader, dict]:
    """A GGUFReader whose keys we read have the types we read them as, with its fields as plain values
    (gguf_fields), or a one-line error naming the file.

    gguf-py parses with numpy views of the file: lying counts or lengths surface as IndexError, ValueError,
    OverflowError, ... from its internals. Whatever it raises on a file is that file's fault, hence exit 2."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the memory map
            raise CheckpointError("not a regular file", path)
        reader = gguf.GGUFReader(path)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        text = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"not a readable GGUF file ({type(exc).__name__}: {text})", path) from None
    return reader, _checked_fields(reader, path)


# The keys the readers below turn into numbers or strings, by the GGUF value types they accept.
INT_TYPES = frozenset({V.UINT8, V.INT8, V.UINT16, V.INT16, V.UINT32, V.INT32, V.UINT64, V.INT64})
NUMBER_TYPES = INT_TYPES | {V.FLOAT32, V.FLOAT64}
OUR_KEY_TYPES = {KEY_L_ORIG: INT_TYPES, KEY_MAX: INT_TYPES, KEY_ROTARY_DIM: INT_TYPES, KEY_THETA: NUMBER_TYPES,
                 KEY_ATTENTION: NUMBER_TYPES, KEY_EXPLICIT: NUMBER_TYPES | {V.BOOL}, KEY_FACTOR_SETS: {V.STRING},
                 gguf.Keys.General.ARCHITECTURE: {V.STRING}, gguf.Keys.General.FILE_TYPE: INT_TYPES,
                 **{key: NUMBER_TYPES for key in KEY_SET_ATTENTION.values()}}
ARCH_KEY_TYPES = {gguf.Keys.Rope.SCALING_ORIG_CTX_LEN: INT_TYPES, gguf.Keys.LLM.CONTEXT_LENGTH: INT_TYPES,
                  gguf.Keys.Rope.FREQ_BASE: NUMBER_TYPES, gguf.Keys.Rope.SCALING_ATTN_FACTOR: NUMBER_TYPES,
                  gguf.Keys.Rope.SCALING_TYPE: {V.STRING}}
FACTOR_KEYS = (KEY_LONG, KEY_SHORT)


def _checked_fields(reader: gguf.GGUFReader, path: Path) -> dict:
    """gguf_fields(reader), refusing a GGUF whose spec keys hold another type than the one we read them as (a
    string L_orig, a number where the factor array belongs), or that gguf_fields cannot turn into plain values."""
    fields = reader.fields
    arch_field = fields.get(gguf.Keys.General.ARCHITECTURE)
    expected = dict(OUR_KEY_TYPES)
    if arch_field is not None and arch_field.types == [V.STRING]:
        arch = field_value(arch_field)
        expected.update({key.format(arch=arch): types for key, types in ARCH_KEY_TYPES.items()})
    for key, types in expected.items():
        field = fields.get(key)
        if field is not None and (len(field.types) != 1 or field.types[0] not in types):
            raise CheckpointError(f"GGUF key {key} has type {_type_name(field)}, expected "
                                  f"{' or '.join(sorted(t.name for t in types))}", path)
    for key in FACTOR_KEYS:
        field = fields.get(key)
        if field is not None and (len(field.types) != 2 or field.types[0] != V.ARRAY
                                  or field.types[1] not in NUMBER_TYPES):
            raise CheckpointError(f"GGUF key {key} has type {_type_name(field)}, expected an array of numbers", path)
    try:
        return gguf_fields(reader)
    except Exception as exc:  # noqa: BLE001 - a field gguf-py parsed but whose parts do not add up
        raise CheckpointError(f"GGUF metadata is malformed ({type(exc).__name__})", path) from None


def _type_name(field: gguf.ReaderField) -> str:
    return " of ".join(t.name for t in field.types) or "none"


def gguf_fields(reader: gguf.GGUFReader) -> dict:
    """Every metadata key with its value as plain Python (str, int, float, or a list of them)."""
    return {name: field_value(f) for name, f in reader.fields.items()}


def field_value(field: gguf.ReaderField):
    """One metadata field as plain Python."""
    if not field.types:
        return None
    if field.types[0] == V.ARRAY:
        if len(field.types) > 1 and field.types[1] == V.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i][0].item() for i in field.data]
    if field.types[0] == V.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]][0].item()


def _spec_from_our_keys(fields: dict) -> LongRopeSpec:
    explicit = fields.get(KEY_EXPLICIT)
    return LongRopeSpec(
        long_factor=tuple(fields[KEY_LONG]),
        short_factor=tuple(fields[KEY_SHORT]),
        original_max_position_embeddings=int(fields[KEY_L_ORIG]),
        max_position_embeddings=int(fields[KEY_MAX]),
        rope_theta=float(fields[KEY_THETA]),
        rotary_dim=int(fields[KEY_ROTARY_DIM]),
        explicit_attention_factor=float(fields[KEY_ATTENTION]) if explicit else None,
        rotary_dim_source="GGUF longrope_convert.rotary_dim",
        **{name: float(fields[key]) for name, key in KEY_SET_ATTENTION.items() if fields.get(key) is not None},
    )


def _spec_from_llama_cpp(reader: gguf.GGUFReader, fields: dict) -> LongRopeSpec | None:
    tensors = {t.name: t for t in reader.tensors}
    names = PAIR_TENSORS
    if not all(n in tensors for n in names):
        return None
    arch = fields.get(gguf.Keys.General.ARCHITECTURE)
    key = lambda k: fields.get(k.format(arch=arch))  # noqa: E731
    long, short = (tuple(float(x) for x in tensors[n].data) for n in names)
    l_orig = key(gguf.Keys.Rope.SCALING_ORIG_CTX_LEN) or key(gguf.Keys.LLM.CONTEXT_LENGTH)
    spec = LongRopeSpec(
        long_factor=long,
        short_factor=short,
        original_max_position_embeddings=int(l_orig),
        max_position_embeddings=int(key(gguf.Keys.LLM.CONTEXT_LENGTH) or l_orig),
        rope_theta=float(key(gguf.Keys.Rope.FREQ_BASE) or 10000.0),
        rotary_dim=2 * len(long),
        rotary_dim_source="GGUF rope_factors_long length",
    )
    attn = key(gguf.Keys.Rope.SCALING_ATTN_FACTOR)
    # stored as float32: within float32 rounding of the default it is the default, not an explicit choice
    if attn is not None and abs(attn - spec.attention_factor_default) > 1e-6 * spec.attention_factor_default:
        spec = replace(spec, explicit_attention_factor=float(attn))
    return spec


@dataclass(frozen=True)
class GgufFacts:
    l_orig: int | None  # <arch>.rope.scaling.original_context_length
    precision: str  # tolerance key
    single_set: FactorSet | None  # hf-to-gguf --factor-sets long|short: that set at every length
    missing_factors: str | None = None  # why llama.cpp would run plain RoPE (no factor tensors it loads)

    @property
    def has_factors(self) -> bool:
        return self.missing_factors is None


def read_gguf_facts(path: Path) -> GgufFacts:
    """What the GGUF header says about L_orig, weight precision, a single baked factor set and factor tensors."""
    reader, fields = open_gguf(path)
    arch = fields.get(gguf.Keys.General.ARCHITECTURE)
    l_orig = fields.get(gguf.Keys.Rope.SCALING_ORIG_CTX_LEN.format(arch=arch)) if arch else None
    sets = fields.get(KEY_FACTOR_SETS)
    single = FactorSet(sets) if sets in (FactorSet.LONG.value, FactorSet.SHORT.value) else None
    return GgufFacts(int(l_orig) if l_orig is not None else None, _precision(reader, fields), single,
                     missing_factor_reason(reader, fields))


def missing_factor_reason(reader: gguf.GGUFReader, fields: dict) -> str | None:
    """Why llama.cpp would load no LongRoPE factors from this GGUF (None: it loads them). llama.cpp treats the
    factor tensors as optional and runs plain RoPE silently without them; its llama graph loads the pair only
    when `llama.rope.scaling.type` is longrope, and a single `rope_freqs` otherwise."""
    names = {t.name for t in reader.tensors}
    arch = fields.get(gguf.Keys.General.ARCHITECTURE)
    has_pair, has_freqs = all(n in names for n in PAIR_TENSORS), FREQS_TENSOR in names
    if not has_pair and not has_freqs:
        return (f"rope factors missing: no {' / '.join(PAIR_TENSORS)} or {FREQS_TENSOR} tensor, so llama.cpp runs "
                "plain RoPE")
    scaling_type = fields.get(gguf.Keys.Rope.SCALING_TYPE.format(arch=arch))
    if arch == gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA] and not has_freqs \
            and scaling_type != gguf.RopeScalingType.LONGROPE.value:
        return (f"rope factors missing for llama.cpp: arch llama loads {' / '.join(PAIR_TENSORS)} only when "
                f"{gguf.Keys.Rope.SCALING_TYPE.format(arch=arch)} = longrope (it is {scaling_type!r})")
    return None


def _precision(reader: gguf.GGUFReader, fields: dict) -> str:
    file_type = fields.get(gguf.Keys.General.FILE_TYPE)
    try:
        if file_type is not None:
            return FILE_TYPE_PRECISION.get(gguf.LlamaFileType(int(file_type)).name, "quantized")
    except ValueError:
        pass
    types = collections.Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2)
    common = types.most_common(1)[0][0] if types else "F32"
    return TENSOR_TYPE_PRECISION.get(common, "quantized")
