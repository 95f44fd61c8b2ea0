"""--json and --junit writers: whole files or nothing (temp + rename), schema-versioned JSON, JUnit XML."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ..formats.atomic_output import atomic_output_file, check_output_path
from ..formats.errors import OutputPathError
from .report import ERROR, FAIL, SKIP, VerifyReport

SCHEMA_FILE = Path(__file__).with_name("report_schema.json")
JUNIT_SUITE = "longrope-convert verify"


def check_report_path(out: Path, inputs: Sequence[Path], force: bool = False) -> None:
    """Before any work: a report replaces an older regular file only with --force, and never a folder, a device,
    FIFO or socket, a link into an input, or anything inside an input."""
    if out.is_dir() and not out.is_symlink():
        raise OutputPathError("is a folder; give a file name for the report", out)
    check_output_path(out, inputs, force=force, kind="file")


def report_json(report: VerifyReport) -> str:
    """The report as strict JSON (a NaN or infinite metric is written as null)."""
    return json.dumps(_finite(report.as_dict()), indent=2, allow_nan=False) + "\n"


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def report_junit(report: VerifyReport) -> str:
    """One testcase per target x case; failures carry the metric that broke, skips their reason."""
    suite = ET.Element("testsuite", name=JUNIT_SUITE, tests=str(len(report.results)),
                       failures=str(report.counts()[FAIL]), errors=str(report.counts()[ERROR]),
                       skipped=str(report.counts()[SKIP]),
                       time=f"{sum(r.seconds for r in report.results):.3f}")
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"verify.{r.kind}", name=f"{r.target} @ {r.label}",
                             time=f"{r.seconds:.3f}")
        if r.status == FAIL:
            ET.SubElement(case, "failure", message="; ".join(r.failures), type="mismatch")
        elif r.status == ERROR:
            ET.SubElement(case, "error", message="; ".join(r.failures), type="runtime")
        elif r.status == SKIP:
            ET.SubElement(case, "skipped", message=r.note)
        if r.metrics:
            ET.SubElement(case, "system-out").text = json.dumps(
                {"factor_set": r.factor_set, "reference_set": r.reference_set, **r.metrics, "note": r.note})
    root = ET.Element("testsuites", name=JUNIT_SUITE)
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_text(out: Path, text: str) -> None:
    """Whole report or nothing, through the shared output policy (temp file beside OUT, then rename)."""
    with atomic_output_file(out, force=True) as tmp:
        tmp.write_text(text)


def load_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())
