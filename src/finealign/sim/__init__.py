"""Simulated tasks with a gold reward at every token and an oracle minimal editor (pure logic).

``make_task("facts", "slots=2")`` builds a task; ``TASKS`` names them. See ``sim.base`` for the
interface, ``sim.annotator`` for the simulated annotator's noise knobs and ``sim.make`` for the
data sets ``finealign sim make`` writes.
"""

from __future__ import annotations

import dataclasses

from ..errors import FinealignError
from .arithmetic import ArithmeticOptions, ArithmeticTask
from .base import Instance, Judgement, Mention, NotGenerated, SimTask, gold_token_labels, gold_token_rewards, \
    oracle_edit, scored_units, unit_offsets
from .constraints import ConstraintsOptions, ConstraintsTask
from .facts import FactsOptions, FactsTask, load_facts

TASKS = {"facts": (FactsTask, FactsOptions), "constraints": (ConstraintsTask, ConstraintsOptions),
         "arithmetic": (ArithmeticTask, ArithmeticOptions)}

__all__ = ["TASKS", "Instance", "Judgement", "Mention", "NotGenerated", "SimTask", "gold_token_labels",
           "gold_token_rewards", "knobs_help", "load_facts", "make_task", "oracle_edit", "parse_options", "scored_units",
           "unit_offsets"]


def knobs_help() -> str:
    """Each task's difficulty knobs with their defaults, for help texts: ``facts: slots=1, ...; constraints: ...``
    (a tuple knob is shown as ``A+B (default: all)``, one unset by default as ``PATH (default: none)``)."""
    def show(f) -> str:
        d = f.default
        v = ("A+B (default: all)" if isinstance(d, tuple) else "PATH (default: none)" if d is None
             else str(d).lower() if isinstance(d, bool) else d)
        return f"{f.name}={v}"

    return "; ".join(f"{t}: " + ", ".join(show(f) for f in dataclasses.fields(o)) for t, (_, o) in TASKS.items())


def parse_options(task: str, options: str | dict | None) -> dict:
    """``"slots=2,letter=false"`` (or a dict) -> typed keyword arguments of the task's options class."""
    if task not in TASKS:
        raise FinealignError(f"unknown sim task {task!r}; known: {', '.join(TASKS)}")
    cls = TASKS[task][1]
    if not options:
        return {}
    if isinstance(options, str):
        pairs = {}
        for part in options.split(","):
            k, eq, v = part.partition("=")
            if not eq or not k.strip():
                raise FinealignError(f"sim task option {part!r} is not key=value")
            pairs[k.strip()] = v.strip()
        options = pairs
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for k, v in options.items():
        if k not in fields:
            raise FinealignError(f"sim task {task}: unknown option {k!r}; known: {', '.join(fields)}")
        default = fields[k].default
        try:
            if isinstance(v, str) and isinstance(default, bool):
                if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(v)
                v = v.lower() in ("true", "1", "yes")
            elif isinstance(v, str) and isinstance(default, int):
                v = int(v)
            elif isinstance(v, str) and isinstance(default, float):
                v = float(v)
            elif isinstance(default, tuple):
                v = tuple(x for x in (v.split("+") if isinstance(v, str) else v) if x)
        except ValueError:
            raise FinealignError(f"sim task {task}: option {k}={v!r} is not a valid "
                                 f"{type(default).__name__}") from None
        out[k] = v
    return out


def make_task(task: str, options: str | dict | None = None, **extra) -> SimTask:
    """The task named ``task`` with its difficulty knobs (``options``); ``FinealignError`` for an unknown name."""
    kw = parse_options(task, options)
    kw.update({k: v for k, v in extra.items() if v is not None})
    cls, opt_cls = TASKS[task]
    return cls(opt_cls(**kw))
