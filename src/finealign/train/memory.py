"""Process memory of the trainers: give freed activation memory back to the operating system.

With activation checkpointing a training step allocates and frees each decoder layer's activations
(tens of MB each) over and over. glibc's malloc raises its mmap threshold after such frees (up to
32 MiB), so later blocks of that size come from the heap and stay in the process after they are
freed: peak RSS then grows to about what keeping every activation would have cost. Fixing the
threshold at 128 KiB (``mallopt(M_MMAP_THRESHOLD)``, as ``MALLOC_MMAP_THRESHOLD_=131072`` would)
serves large blocks with mmap, which returns them on free. Measured with
``benchmarks/train_memory.py`` (docs/token-rm.md, docs/ppo.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MMAP_THRESHOLD", "release_freed_memory"]

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's initial default, kept fixed


def release_freed_memory() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD`` for this process (Linux/glibc only; a no-op
    elsewhere or when ``FINEALIGN_MALLOC_TUNING=0``). Returns whether the setting was applied."""
    if os.environ.get("FINEALIGN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
