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

__all__ = ["MMAP_THRESHOLD", "activation_bytes", "release_freed_memory", "use_activation_checkpointing"]

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


def activation_bytes(rows: int, tokens: int, layers: int, hidden: int, heads: int, dtype_bytes: int = 4) -> int:
    """Bytes a transformer's training step keeps for the backward pass without activation checkpointing.

    Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", eq. 1): per
    layer ``s*b*h*(34 + 5*a*s/h)`` bytes with 16-bit activations, so ``dtype_bytes / 2`` times that here
    (``rows`` = b sequences of ``tokens`` = s, ``hidden`` = h, ``heads`` = a). Worked: 4 rows x 100 tokens,
    2 layers, h 8, 2 heads, fp32 -> per layer 4*100*8*(34 + 5*2*100/8) = 3200*159 = 508,800; x 2 layers x 2
    = 2,035,200 bytes.
    """
    per_layer = rows * tokens * hidden * 34 + 5 * heads * tokens * tokens * rows
    return int(per_layer * layers * dtype_bytes // 2)


def free_memory_bytes(device: str) -> int | None:
    """Free memory of ``device`` in bytes: CUDA's free memory, or the host's ``MemAvailable`` (Linux);
    None when unknown."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def use_activation_checkpointing(setting: bool | None, need_bytes: int, device: str, share: float = 0.5) -> bool:
    """Whether to checkpoint activations. ``setting`` True/False is obeyed; None (``auto``) turns it on only
    when ``need_bytes`` (``activation_bytes`` of one micro-batch) would take more than ``share`` of the
    device's free memory (``free_memory_bytes``; unknown free memory: on). Checkpointing recomputes every
    layer in the backward pass: it halved CPU throughput at 135M (docs/sim-policy.md), where memory is
    no constraint, so it should be off unless memory demands it."""
    if setting is not None:
        return bool(setting)
    free = free_memory_bytes(device)
    return free is None or need_bytes > share * free
