"""The terminal table: one row per target x case, then a one-line verdict."""

from __future__ import annotations

from .report import CaseResult, VerifyReport

COLUMNS = ("target", "case", "tokens", "set (ref/target)", "rel_l2", "limit", "f32 floor", "kl", "top1", "worst pos",
           "status")


def _row(r: CaseResult) -> tuple[str, ...]:
    m = r.metrics or {}
    sets = f"{r.reference_set or '-'}/{r.factor_set or '-'}"
    status = r.status.upper() if r.status != "pass" else "ok"
    detail = "; ".join(r.failures) or r.note
    if detail:
        status += f" ({detail})"
    tol = r.tolerance or {}
    floor = tol.get("floor") or {}
    return (
        r.target, r.case, r.label, sets,
        _num(m.get("relative_l2")), _num(tol.get("rel_l2")) if m else "-", _num(floor.get("rel_l2")),
        _num(m.get("mean_kl")), f"{m['top1_agreement']:.3f}" if "top1_agreement" in m else "-",
        str(m.get("worst_position", "-")), status,
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def format_table(report: VerifyReport) -> str:
    """The parity matrix as aligned text."""
    rows = [COLUMNS] + [_row(r) for r in report.results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    counts = report.counts()
    verdict = "PASS" if report.passed else "MISMATCH"
    ref = report.reference
    lines.append("")
    lines.append(f"{verdict}: {counts['pass']} passed, {counts['fail']} failed, {counts['error']} errors, "
                 f"{counts['skip']} skipped; reference {ref['dtype']} on {ref['device']} "
                 f"(spec from {ref['spec_source']}, attention factor {ref['attention_factor']:.6g})")
    return "\n".join(lines)
