"""Memory a runtime would need for one case, checked before running it.

A runtime whose memory grows as tokens^2 (ONNX attention scores) or tokens x vocabulary (llama.cpp's logits)
can be killed by the kernel at long lengths, and a killed verify leaves no report. Such a case is skipped
with a reason saying what it would need and what there is.
"""

from __future__ import annotations

import os
from pathlib import Path

MEMORY_SHARE = 0.8  # a case may take this share of the memory available when verify starts it
MEMINFO = Path("/proc/meminfo")


def available_host_bytes() -> int:
    """MemAvailable (free plus reclaimable cache) on Linux, else free physical pages."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def available_gpu_bytes() -> int:
    import torch

    free, _ = torch.cuda.mem_get_info()
    return int(free)


def too_big_reason(needed: int, available: int, what: str) -> str | None:
    """None when `needed` bytes fit in MEMORY_SHARE of `available`; else the skip reason for the table."""
    if needed <= MEMORY_SHARE * available:
        return None
    return f"{what} would need ~{_gib(needed)} GiB, {_gib(available)} GiB available"


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f}"
