"""Verification cases: which token lengths (and which cached decode steps) every target is checked at.

A prefill case runs `length` tokens in one forward. A decode case prefills `prefill` tokens, then feeds
`steps` single tokens through the KV cache; cached keys keep the rotation of the set they were computed
with (transformers' and our ONNX graphs' semantics), so a decode case across L_orig mixes the two sets.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..formats.errors import LongRopeError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    import torch

CPU_LONG_MULTIPLE = 2  # CPU long case: 2 x L_orig (capped by max positions), seconds on a tiny model
GPU_LONG_LENGTHS = (32768, 131072)  # GPU long cases, capped by max_position_embeddings
DECODE_STEPS = 2  # decode from L_orig-1: the first step is short (L_orig tokens), the second long
LOGIT_ELEMENT_BUDGET = 1 << 24  # compared positions x vocab per case (64 MiB in float32)
# No case may cover more tokens than this, --allow-beyond-max or not: 16M tokens is past every LongRoPE model's
# context, and a typo (an extra digit or two) would otherwise surface as an allocation failure minutes later.
MAX_CASE_TOKENS = 1 << 24


class CaseSpecError(LongRopeError):
    """--lengths is malformed."""


@dataclass(frozen=True)
class Case:
    """One row of the parity matrix for every target."""

    name: str
    prefill: int
    steps: int = 0  # 0: a plain prefill case; >0: single-token cached decode steps after the prefill

    @property
    def is_decode(self) -> bool:
        return self.steps > 0

    @property
    def length(self) -> int:
        """Total tokens the case covers (the highest position + 1)."""
        return self.prefill + self.steps

    @property
    def label(self) -> str:
        return f"{self.prefill}+{self.steps}" if self.is_decode else str(self.prefill)

    def compared_positions(self, vocab_size: int) -> int:
        """How many positions are compared: all of them, unless positions x vocab exceeds the budget."""
        if self.is_decode:
            return self.steps
        return max(1, min(self.prefill, LOGIT_ELEMENT_BUDGET // max(vocab_size, 1)))

    def position_ranges(self, vocab_size: int, l_orig: int) -> list[tuple[int, int]]:
        """[start, end) ranges of the compared positions. Every position when they fit the logit budget; else the
        budget split between the head (before L_orig), the positions around L_orig and the tail, so a long case
        still looks where the sets differ most. A decode case compares its steps."""
        if self.is_decode:
            return [(self.prefill, self.length)]
        n, total = self.compared_positions(vocab_size), self.prefill
        if n >= total:
            return [(0, total)]
        part = n // 3
        tail = (total - (n - 2 * part), total)
        switch_start = min(max(part, l_orig - part // 2), tail[0] - part)
        return _merged([(0, part), (switch_start, switch_start + part), tail])


def positions_in(ranges: list[tuple[int, int]]) -> "torch.Tensor":
    """Every position of the sorted [start, end) ranges, as one int64 tensor."""
    import torch

    return torch.cat([torch.arange(a, b) for a, b in ranges])


def default_cases(l_orig: int, max_positions: int, on_gpu: bool, max_tokens: int | None = None) -> list[Case]:
    """short (<= L_orig), exactly L_orig, L_orig+1 (the switch), long, and a cached decode across L_orig.

    Long lengths are capped by max_position_embeddings and by `max_tokens` (what fits in memory), never below
    L_orig+2.
    """
    cases = [Case("short", max(1, l_orig // 2)), Case("at L_orig", l_orig), Case("L_orig+1", l_orig + 1)]
    longs = GPU_LONG_LENGTHS if on_gpu else (CPU_LONG_MULTIPLE * l_orig,)
    seen = {c.prefill for c in cases}
    for n in longs:
        n = max(min(n, max_positions, max_tokens or n), l_orig + 2)
        if n not in seen:
            cases.append(Case("long", n))
            seen.add(n)
    if l_orig >= 2:
        cases.append(Case("decode across L_orig", l_orig - 1, DECODE_STEPS))
    return cases


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


_ITEM = re.compile(r"^\s*(\d+)\s*(?:\+\s*(\d+))?\s*$")


def parse_lengths(text: str, l_orig: int, max_positions: int | None = None,
                  allow_beyond_max: bool = False) -> list[Case]:
    """`200,256,257,600,255+2`: N is an N-token prefill, P+S a P-token prefill then S cached decode steps.

    A case covering more than `max_positions` tokens (the spec's max_position_embeddings) is refused unless
    `allow_beyond_max`; one over MAX_CASE_TOKENS always is. Both are checked here, before anything is loaded.
    """
    cases = []
    for item in text.split(","):
        match = _ITEM.match(item)
        if not match:
            raise CaseSpecError(f"--lengths: cannot read {_shown(item)}; expected N or PREFILL+STEPS, "
                                "comma-separated")
        prefill, steps = _count(match[1], item), _count(match[2] or "0", item)
        if prefill < 1 or (match[2] is not None and steps < 1):
            raise CaseSpecError(f"--lengths: {_shown(item)} must use positive numbers")
        case = Case(_name_for(prefill, steps, l_orig), prefill, steps)
        _check_case_length(case, item, max_positions, allow_beyond_max)
        cases.append(case)
    return cases


def _shown(item: str) -> str:
    """An item as quoted in an error: shortened, so a pasted run of digits cannot flood the one-line message."""
    text = item.strip()
    return repr(text if len(text) <= 40 else f"{text[:24]}...({len(text)} characters)")


def _count(digits: str, item: str) -> int:
    """A token count from its digits; refused before int() when it is obviously absurd (Python refuses to parse
    over 4300 digits, with an error that is not ours)."""
    if len(digits.lstrip("0")) > len(str(MAX_CASE_TOKENS)):
        raise CaseSpecError(f"--lengths: {_shown(item)} exceeds the {MAX_CASE_TOKENS}-token limit of a case")
    return int(digits)


def _check_case_length(case: Case, item: str, max_positions: int | None, allow_beyond_max: bool) -> None:
    """Refuse a case past MAX_CASE_TOKENS, or past max_position_embeddings without --allow-beyond-max."""
    if case.length > MAX_CASE_TOKENS:
        raise CaseSpecError(f"--lengths: {_shown(item)} covers {case.length} tokens, over the "
                            f"{MAX_CASE_TOKENS}-token limit of a case")
    if max_positions is None or case.length <= max_positions:
        return
    if not allow_beyond_max:
        raise CaseSpecError(f"--lengths: {_shown(item)} covers {case.length} tokens, beyond the model's "
                            f"max_position_embeddings {max_positions}; pass --allow-beyond-max to verify there")
    # Allowed, but the row then checks runtimes past the context the factors were searched for: say so.
    log.warning("--lengths %s goes beyond max_position_embeddings %d (--allow-beyond-max)", case.label,
                max_positions)


def _name_for(prefill: int, steps: int, l_orig: int) -> str:
    if steps:
        crosses = prefill <= l_orig < prefill + steps
        return "decode across L_orig" if crosses else "decode"
    if prefill < l_orig:
        return "short"
    if prefill == l_orig:
        return "at L_orig"
    return "L_orig+1" if prefill == l_orig + 1 else "long"
