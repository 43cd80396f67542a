"""``finealign sim make TASK``: a simulated task's data sets with a gold reward (see ``finealign.sim.make``).
The study over them is ``python -m finealign.pipeline.sim_study`` (``benchmarks/sim_study.py``).

Flags are generated from :class:`finealign.sim.make.SimMakeConfig`.
"""

from __future__ import annotations

import typer

from ..data.io import to_json

sim_app = typer.Typer(no_args_is_help=True, help="Simulated tasks with a gold reward: facts, constraints, arithmetic.")


def run_sim_make(cfg, quiet: bool = False):
    """Make (or resume) the data sets; prints the summary as JSON on stdout."""
    from ..sim.make import make_sim
    from .common import console, out as stdout, progress_callback

    console.print(f"sim {cfg.task}: {cfg.n} + {cfg.heldout} held-out prompts, {cfg.k} samples each from "
                  f"{cfg.policy} -> {cfg.out}", soft_wrap=True, highlight=False)
    with progress_callback(f"sample {cfg.task}", disable=quiet) as cb:
        summary = make_sim(cfg, on_progress=cb, log=lambda m: console.print(m, highlight=False, soft_wrap=True))
    stdout.print(to_json(summary), soft_wrap=True, highlight=False)


def register(app, **_):
    from ..sim.make import SimMakeConfig
    from .options import command_from_config

    app.add_typer(sim_app, name="sim")
    command_from_config(sim_app, "make", SimMakeConfig, run_sim_make,
                        help="Prompts, policy samples, oracle minimal edits (edits.jsonl), gold-preference pairs "
                             "(pairs.jsonl) and held-out sets of a simulated task. Rerun to resume.")
