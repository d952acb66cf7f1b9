"""Training's malloc policy: freed large blocks leave the resident set (glibc)."""

from __future__ import annotations

import platform
import sys

import pytest

from training.memory import release_large_blocks


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt's M_MMAP_THRESHOLD is glibc's",
)
def test_the_threshold_is_taken_on_glibc() -> None:
    assert release_large_blocks() is True
