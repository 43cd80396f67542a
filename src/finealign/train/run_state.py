"""Run state shared by the trainers finealign owns (token RM, PPO, and whatever comes next).

One place for what makes a long run resumable and exact:

* **Checkpoints**, written atomically to ``OUT/checkpoint/``::

      trainable.pt         the trainable tensors by name (CPU)
      state.pt             optimizer, scheduler and RNG states
      trainer_state.json   {"step", "fingerprint", "extra"}: the trainer's own JSON state in "extra"

  A save writes ``OUT/.checkpoint.tmp/`` in full, renames the current checkpoint to
  ``OUT/.checkpoint.old/``, renames the new one into place, then deletes the old one. A run killed at
  any point leaves a state :func:`recover_checkpoint` repairs: before the first rename the old
  checkpoint is still in place (the partial temp folder is deleted); between the two renames the old
  one is moved back; after the second the leftover old one is deleted. The stages call
  :data:`fault_hook` (tests inject a failure there; nothing sleeps).
* **RNG states** (Python, NumPy, torch, CUDA): :func:`capture_rng` / :func:`restore_rng`.
* **The metrics log** ``OUT/metrics.jsonl`` (one JSON object per event, each with a ``step``):
  :class:`MetricsLog` drops the events after the resumed step (a run killed between logging and
  checkpointing redoes them) and a torn last line, and sends numbers to accelerate's trackers
  (TensorBoard under ``OUT/tb/``, W&B).
* **The fingerprint**: the settings a resumed run must share with the interrupted one
  (:func:`fingerprint`, :func:`check_fingerprint`), so an output folder is never resumed by a
  different run.
* **The learning-rate schedule**: one warmup formula for every trainer (:func:`lr_factor`).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..data.io import to_json
from ..errors import FinealignError

CHECKPOINT = "checkpoint"
from .result import REPORT_TO, SCHEDULES  # noqa: E402,F401

# Stages of a save, in order; ``fault_hook(stage)`` is called at each (tests raise there to simulate a kill).
SAVE_STAGES = ("begin", "partial", "written", "old_moved", "renamed")
fault_hook: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if fault_hook is not None:
        fault_hook(name)


from .result import TrainResult  # noqa: E402,F401  (re-exported: the trainers' result type)


# ----------------------------------------------------------------------------------------- LR schedule


def lr_factor(step: int, *, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate multiplier before optimizer step ``step`` + 1 (``step`` counts from 0).

    Linear warmup from 0 over ``warmup_steps``, then constant, linear decay to 0 at ``total_steps``, or
    a half cosine to 0: the formulas of Hugging Face's ``get_constant_schedule_with_warmup``,
    ``get_linear_schedule_with_warmup`` and ``get_cosine_schedule_with_warmup``. With 2 warmup steps
    the first three steps use 0, 0.5 and 1.0 of the rate. Raises ``FinealignError`` for an unknown
    schedule.
    """
    if schedule not in SCHEDULES:
        raise FinealignError(f"lr schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_scheduler(optimizer, *, schedule: str, warmup_steps: int, total_steps: int):
    """A ``LambdaLR`` over ``optimizer`` following :func:`lr_factor` (its state goes into checkpoints)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, schedule=schedule, warmup_steps=warmup_steps, total_steps=total_steps))


# ----------------------------------------------------------------------------------------- RNG


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def capture_rng() -> dict:
    """The global RNG states: Python, NumPy, torch CPU and (when present) every CUDA device."""
    import numpy as np

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict) -> None:
    """Restore what :func:`capture_rng` captured (a missing part is left as it is)."""
    import numpy as np

    if state.get("python") is not None:
        random.setstate(state["python"])
    if state.get("numpy") is not None:
        np.random.set_state(state["numpy"])
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------- fingerprint


def fingerprint(settings: dict, exclude: set[str] | frozenset[str] = frozenset()) -> dict:
    """The settings that define a run (JSON-normalised), without those in ``exclude`` (the ones a
    resumed run may change: output folder, logging and saving intervals, trackers, ...)."""
    return json.loads(json.dumps({k: v for k, v in settings.items() if k not in exclude}, default=str))


def check_fingerprint(saved: dict, current: dict, out: Path, defaults: dict | None = None) -> None:
    """Refuse to resume ``out`` with other settings: ``FinealignError`` naming the fields that differ.

    A field missing from ``saved`` (written by an older version) counts as its default in ``defaults``.
    """
    defaults = fingerprint(defaults or {})
    diff = sorted(k for k, v in current.items() if saved.get(k, defaults.get(k)) != v)
    if diff:
        raise FinealignError(f"{out}: holds a run with another configuration ({', '.join(diff)} differ); "
                             "use another --out, or the same settings to resume")


# ----------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: ``trainable`` tensors by name, optimizer/scheduler/RNG ``state``, the trainer's
    JSON ``extra`` state, the ``step`` it was taken after, and the run's ``fingerprint``."""

    step: int
    trainable: dict
    state: dict
    extra: dict
    fingerprint: dict


def trainable_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable parameters of ``module``, by name."""
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


def load_trainable(module: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path | str) -> None:
    """Copy ``tensors`` into the trainable parameters of ``module``; ``FinealignError`` (naming ``where``)
    when one is missing or unknown."""
    params = dict(module.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    unknown = sorted(set(tensors) - set(params))
    missing = sorted(trainable - set(tensors))
    if unknown or missing:
        what = f"unknown tensors (e.g. {unknown[0]})" if unknown else f"no {len(missing)} trainable tensors (e.g. {missing[0]})"
        raise FinealignError(f"{where}: the checkpoint does not fit this model: {what}")
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)


def _paths(out: Path) -> tuple[Path, Path, Path]:
    return out / CHECKPOINT, out / f".{CHECKPOINT}.tmp", out / f".{CHECKPOINT}.old"


def save_checkpoint(out: str | Path, *, step: int, trainable: dict, optimizer, scheduler, fingerprint: dict,
                    extra: dict | None = None) -> Path:
    """Write ``OUT/checkpoint`` atomically (see the module docstring); returns its path.

    Captures the global RNG states itself, so call it at the point the resumed run starts from.
    """
    out = Path(out)
    final, tmp, old = _paths(out)
    _stage("begin")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(trainable, tmp / "trainable.pt")
    _stage("partial")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": capture_rng()},
               tmp / "state.pt")
    (tmp / "trainer_state.json").write_text(to_json({"step": step, "fingerprint": fingerprint,
                                                      "extra": extra or {}}, indent=2), encoding="utf-8")
    _stage("written")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
        _stage("old_moved")
    os.replace(tmp, final)
    _stage("renamed")
    shutil.rmtree(old, ignore_errors=True)
    return final


def recover_checkpoint(out: str | Path) -> Path | None:
    """Repair what an interrupted save left in ``out`` and return the checkpoint folder (None: none yet).

    Raises ``FinealignError`` for a checkpoint of an older layout (no ``trainer_state.json``).
    """
    out = Path(out)
    final, tmp, old = _paths(out)
    if not final.exists() and (old / "trainer_state.json").exists():
        os.replace(old, final)  # killed between the two renames: the old checkpoint is the last complete one
    shutil.rmtree(tmp, ignore_errors=True)  # a save that did not reach its renames
    shutil.rmtree(old, ignore_errors=True)  # killed after the second rename
    if not final.exists():
        return None
    if not (final / "trainer_state.json").exists():
        raise FinealignError(f"{final}: a checkpoint without trainer_state.json (an older finealign, or "
                             "damaged); use another --out or delete the folder")
    return final


def latest_checkpoint(out: str | Path) -> Path | None:
    """The last complete checkpoint folder of ``out`` without repairing anything (safe while the run
    is still writing): ``OUT/checkpoint``, or the old one during a save's two renames; None if none."""
    final, _, old = _paths(Path(out))
    for ck in (final, old):
        if (ck / "trainer_state.json").is_file():
            return ck
    return None


def load_checkpoint(out: str | Path, current_fingerprint: dict, *, defaults: dict | None = None) -> Checkpoint | None:
    """The checkpoint of ``out`` after :func:`recover_checkpoint` (None when there is none).

    Raises ``FinealignError`` when it was written by a run with another fingerprint.
    """
    ck = recover_checkpoint(out)
    if ck is None:
        return None
    meta = json.loads((ck / "trainer_state.json").read_text(encoding="utf-8"))
    check_fingerprint(meta["fingerprint"], current_fingerprint, Path(out), defaults)
    trainable = torch.load(ck / "trainable.pt", map_location="cpu")
    state = torch.load(ck / "state.pt", map_location="cpu", weights_only=False)
    return Checkpoint(int(meta["step"]), trainable, state, meta.get("extra", {}), meta["fingerprint"])


def restore(ck: Checkpoint, module: torch.nn.Module, optimizer, scheduler, where: Path | str) -> None:
    """Load a checkpoint into the trainer's objects: trainable weights, optimizer, scheduler, RNG states."""
    load_trainable(module, ck.trainable, where)
    optimizer.load_state_dict(ck.state["optimizer"])
    scheduler.load_state_dict(ck.state["scheduler"])
    restore_rng(ck.state["rng"])


# ----------------------------------------------------------------------------------------- metrics and trackers


def truncate_jsonl(path: Path, keep_until: int) -> dict:
    """Keep the events of ``path`` whose ``step`` is at most ``keep_until`` (atomically); unreadable
    lines (the torn last line of a killed run) are dropped. Returns the last event kept ({} if none)."""
    if not path.exists():
        return {}
    from ..data.io import write_text_atomic

    keep, last = [], {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("step"), int) and obj["step"] <= keep_until:
            keep.append(line)
            last = obj
    write_text_atomic(path, "".join(k + "\n" for k in keep))
    return last


def tracker_kwargs(report_to: list[str], out: Path) -> dict:
    """The ``Accelerator`` arguments for the trackers in ``report_to`` (TensorBoard logs under ``OUT/tb/``).

    Raises ``FinealignError`` for an unknown tracker or one whose package is not installed.
    """
    import importlib.util

    for r in report_to:
        if r not in REPORT_TO:
            raise FinealignError(f"report_to: expected tensorboard and/or wandb, got {r!r}")
        pkg = "tensorboard" if r == "tensorboard" else "wandb"
        if importlib.util.find_spec(pkg) is None:
            raise FinealignError(f"report_to {r} needs the {pkg} package (pip install {pkg})")
    return {"log_with": list(report_to), "project_dir": str(out / "tb")} if report_to else {}


class MetricsLog:
    """``OUT/<name>`` (default ``metrics.jsonl``): one JSON object per event, each with a ``step``.

    On open (main process) the events after ``keep_until`` are dropped: the resumed run redoes them;
    ``last`` is then the last event kept, and after each :meth:`append` the event appended.
    With trackers (``acc`` made with :func:`tracker_kwargs`), :meth:`append` also sends the event's
    numbers to them; ``project`` and ``config`` name the tracked run. Other processes write nothing.
    """

    def __init__(self, out: Path, keep_until: int, *, acc=None, project: str | None = None,
                 config: dict | None = None, name: str = "metrics.jsonl", main: bool = True,
                 wandb_dir: Path | None = None):
        self.path = Path(out) / name
        self.acc = acc if acc is not None and getattr(acc, "log_with", None) else None
        self.main = main
        self._f = None
        self.last: dict = {}
        if main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.last = truncate_jsonl(self.path, keep_until)
            self._f = open(self.path, "a", encoding="utf-8")
        if self.acc is not None:
            init = {"wandb": {"dir": str(wandb_dir or out), "resume": "allow"}}
            self.acc.init_trackers(project or "finealign", config={k: str(v) for k, v in (config or {}).items()},
                                   init_kwargs=init)

    def append(self, event: dict[str, Any]) -> None:
        """Write one event (a line, flushed) and send its numbers to the trackers at its ``step``."""
        self.last = event
        if self._f is not None:
            self._f.write(to_json(event) + "\n")
            self._f.flush()
        if self.acc is not None:
            scalars = {k: v for k, v in event.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
            self.acc.log(scalars, step=event["step"])

    def close(self) -> None:
        """Flush and close the file (fsync) and end the trackers; safe to call twice."""
        if self._f is not None and not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        if self.acc is not None:
            self.acc.end_training()
            self.acc = None
