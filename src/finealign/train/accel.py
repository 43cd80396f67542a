"""One place to build an ``accelerate.Accelerator``.

accelerate keeps process-wide state and refuses a second ``Accelerator`` with other settings (cpu,
mixed precision) in the same Python process. Under ``accelerate launch`` that state is the launcher's and
is kept; in a single plain process (a notebook, a test session running several trainers) it is reset so
each trainer gets the settings it asks for.
"""

from __future__ import annotations

import os


def make_accelerator(**kwargs):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState, PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "ACCELERATE_MIXED_PRECISION" in os.environ
    if not launched and AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        PartialState._reset_state()
    return Accelerator(**kwargs)


def adamw(params, lr: float, weight_decay: float = 0.0):
    """``torch.optim.AdamW``, fused (one kernel over all tensors) where this torch supports it for these
    parameters (CPU and CUDA float tensors), else the default implementation. On CPU the fused kernel is
    several times faster than the per-tensor loop torch otherwise uses there."""
    import torch

    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
