"""Process memory during training: large freed blocks go back to the operating system.

glibc serves a large allocation with its own mmap (returned to the OS when freed) only above its
mmap threshold, and raises that threshold, up to 32 MiB, each time such a block is freed. After
the first few, training's transient arrays (feature grids, training matrices, LightGBM's buffers)
come from the heap arena of whichever thread made them and stay resident once freed, where the
next allocation of another thread cannot reuse them. Measured on m5_tiny (bench/train.py, one
process: read, fit, predict, 2-fold backtest): peak RSS 578 MiB to the end of predict and 634
MiB after the backtest with glibc's default; with a fixed 128 KiB threshold 514 and 527 MiB, for
about 10% more fit time (the page faults of fresh mappings).
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
