"""PNG figures (`--plot`): matplotlib loaded on demand, each file written whole or not at all."""

from __future__ import annotations

from pathlib import Path

from .atomic_output import atomic_output_file
from .errors import LongRopeError


def pyplot():
    """matplotlib.pyplot on the Agg backend (no screen needed), or a one-line error naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LongRopeError("--plot needs matplotlib: pip install 'longrope-convert[plot]'") from None
    return plt


def save_png(fig, png: Path, force: bool, dpi: int) -> None:
    """Write `fig` to `png` atomically and close it, written or not."""
    try:
        with atomic_output_file(png, force) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)  # the temp name has no .png suffix to infer it from
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
