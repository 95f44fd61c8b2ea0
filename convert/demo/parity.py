"""The demo's parity tables: `verify` on each demo model, with transformers, llama.cpp and onnxruntime targets."""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)

from .models import DEMO_L_ORIG

# A GGUF with one factor set applies it at every length: verify it only where that set is the right one.
SINGLE_SET_LENGTHS = {"long": f"{DEMO_L_ORIG + 1},{2 * DEMO_L_ORIG}", "short": f"{DEMO_L_ORIG // 2},{DEMO_L_ORIG}"}


def _runs(artifact, has_llama_cpp: bool):
    """(title, targets, lengths) for each verification of one demo model."""
    from ...verify.targets import TargetRequest

    main = [TargetRequest("transformers"), TargetRequest("onnx", artifact.onnx)]
    sets = artifact.model.gguf_factor_sets
    runs = []
    if has_llama_cpp and sets == "pair":
        main.append(TargetRequest("gguf", artifact.gguf))
    runs.append(("", tuple(main), None))
    if has_llama_cpp and sets != "pair":
        title = f" -- GGUF with the {sets} set only, checked at the lengths where transformers uses it"
        runs.append((title, (TargetRequest("gguf", artifact.gguf),), SINGLE_SET_LENGTHS[sets]))
    return runs


def demo_parity_tables(artifacts) -> tuple[str, bool]:
    """Run the verifier's default cases on every model; returns the printed tables and whether all passed."""
    from ...verify.report_table import format_table
    from ...verify.runner import VerifyOptions, run_verification

    has_llama_cpp = importlib.util.find_spec("llama_cpp") is not None
    if not has_llama_cpp:
        log.warning("llama-cpp-python is not installed: GGUF rows are skipped (pip install 'longrope-convert[llama]')")
    sections, all_pass = [], True
    for a in artifacts:
        for title, targets, lengths in _runs(a, has_llama_cpp):
            report = run_verification(VerifyOptions(src=a.model.baked, targets=targets, lengths=lengths, device="cpu"))
            sections.append(f"== {a.model.hf_class}{title}\n{format_table(report)}")
            all_pass &= report.passed
    return "\n\n".join(sections), all_pass
