"""Process memory during training: large freed blocks go back to the operating system.

glibc raises its mmap threshold each time a large block is freed, after which training's transient
arrays come from per-thread heap arenas and stay resident once freed. A fixed threshold returns
them (figures: docs/benchmarks.md, Training: decisions).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024


def release_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix the process's mmap threshold (glibc), so freed large blocks leave the resident set.

    Process-wide and lasting: the training entry points call it (``training.pipeline.train`` and
    ``backtest``, hence ``salesfc train``, ``salesfc backtest`` and the retrain worker), the
    serving process does not. Returns whether it took effect (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
