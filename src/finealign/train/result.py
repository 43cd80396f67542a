"""What every trainer shares and the CLI's start needs, in a module without torch: the result type, the
LR schedules and trackers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SCHEDULES = ("constant", "linear", "cosine")
REPORT_TO = ("tensorboard", "wandb")


@dataclass(frozen=True)
class TrainResult:
    """What one training call did; every trainer returns one (token RM, PPO, the TRL wrappers).

    ``steps``: steps done in total (optimizer steps; PPO: rollout steps); ``finished``: the run reached
    its last step (False after a time budget such as ``stop_after``); ``metrics``: the last logged
    metrics (PPO, TRL) or the final evaluation (token RM); ``history``: the log history where the
    trainer keeps one; ``details``: the trainer's own JSON-safe counts (documented by each trainer).
    """

    out: Path
    steps: int
    finished: bool = True
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
