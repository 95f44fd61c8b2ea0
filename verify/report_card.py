"""`verify --write-card`: the parity evidence travels with the checkpoint.

The table goes into SRC's model card (README.md) between markers, replacing an earlier section, and the full report
into SRC/verify.json, so a checkpoint published to a hub carries its proof. Weights and config.json are never
touched; both files are written whole or not at all.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from ..formats.atomic_output import atomic_output_file
from ..formats.errors import OutputPathError
from ..formats.json_io import read_bounded
from .report import VerifyReport
from .report_files import report_json
from .report_table import format_table

CARD_NAME, JSON_NAME = "README.md", "verify.json"
BEGIN, END = "<!-- longrope-convert verify: begin -->", "<!-- longrope-convert verify: end -->"
MAX_CARD_BYTES = 4 * 1024 * 1024


def write_card(report: VerifyReport, src: Path) -> tuple[Path, Path]:
    """Update SRC/README.md's verify section and write SRC/verify.json; returns both paths."""
    card, data = src / CARD_NAME, src / JSON_NAME
    for path in (card, data):
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise OutputPathError("is not a regular file; --write-card will not replace it", path)
    old = read_bounded(card, OutputPathError, MAX_CARD_BYTES, "a model card").decode("utf-8", "replace") \
        if card.exists() else ""
    new = card_with_section(old, card_section(report))
    with atomic_output_file(data, force=True) as tmp:
        tmp.write_text(report_json(report))
    with atomic_output_file(card, force=True) as tmp:
        tmp.write_text(new)
    return card, data


def card_section(report: VerifyReport) -> str:
    lengths = ", ".join(c.label for c in report.cases)
    today = datetime.date.today().isoformat()
    verdict = "all checks pass" if report.passed else "MISMATCH"
    return "\n".join([
        BEGIN,
        "## LongRoPE parity (longrope-convert verify)",
        "",
        f"{verdict}: every target's logits against an independent float64 PyTorch LongRoPE reference at "
        f"{lengths} tokens (L_orig {report.reference['l_orig']}), {report.device}, longrope-convert "
        f"{report.tool_version}, {today}. Full report: `{JSON_NAME}`.",
        "",
        "```",
        format_table(report),
        "```",
        END,
    ])


def card_with_section(card: str, section: str) -> str:
    """`card` with its verify section replaced by `section` (appended when there is none)."""
    start, end = card.find(BEGIN), card.find(END)
    if start != -1 and end > start:
        return card[:start] + section + card[end + len(END):]
    return (card.rstrip() + "\n\n" if card.strip() else "") + section + "\n"
