"""`verify --plot PNG`: relative error against position for every target, L_orig marked.

The picture a user looks at first when something diverges: a conversion error shows as a jump at L_orig (wrong
or missing long factors) or a slope with position (wrong frequencies), float32 precision as a slow rise.
"""

from __future__ import annotations

from pathlib import Path

from ..formats.errors import LongRopeError
from ..formats.figure_file import pyplot, save_png
from .report import VerifyReport


def plot_report(report: VerifyReport, png: Path) -> None:
    """One panel per case that compared positions, one series per target; written whole or not at all."""
    plt = pyplot()
    labels = list(dict.fromkeys(label for _, label in report.curves))
    if not labels:
        raise LongRopeError("--plot: no target produced logits to draw (every case was skipped)")
    fig, axes = plt.subplots(len(labels), 1, figsize=(9, 2.6 * len(labels)), squeeze=False)
    l_orig = report.reference["l_orig"]
    for ax, label in zip(axes[:, 0], labels):
        for (target, case), (positions, errors) in report.curves.items():
            if case == label:
                ax.plot(positions, [max(e, 1e-12) for e in errors], ".", markersize=2, label=target)
        ax.axvline(l_orig, color="red", linestyle="--", linewidth=1, label=f"L_orig {l_orig}")
        ax.set_yscale("log")
        ax.set_title(f"case {label}", fontsize=9)
        ax.set_ylabel("relative error")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, markerscale=4)
    axes[-1, 0].set_xlabel("position")
    fig.tight_layout()
    save_png(fig, png, force=True, dpi=100)
