"""``finealign sim make TASK``: a simulated task's data sets with a gold reward (see ``finealign.sim.make``);
``finealign sim policy TASK``: a small policy trained from scratch for one task (``finealign.sim.policy``);
``finealign sim study ...``: token vs sequence supervision against the gold reward (the verb table's ``sim-study``
row; also ``python -m finealign.studies.sim_study`` and ``benchmarks/sim_study.py``).

Flags are generated from :class:`finealign.sim.make.SimMakeConfig`, :class:`finealign.sim.policy.SimPolicyConfig`
and :class:`finealign.studies.sim_study_config.SimStudyConfig`.
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
                  f"{cfg.model} -> {cfg.out}", soft_wrap=True, highlight=False)
    with progress_callback(f"sample {cfg.task}", disable=quiet) as cb:
        summary = make_sim(cfg, on_progress=cb, log=lambda m: console.print(m, highlight=False, soft_wrap=True))
    stdout.print(to_json(summary), soft_wrap=True, highlight=False)


def run_sim_policy(cfg, quiet: bool = False):
    """Train (or resume) a task policy; prints its record (task, settings, starting gold) as JSON on stdout."""
    from ..train.sim_policy import gold_line, train_task_policy
    from .common import console, out as stdout, progress_callback

    with progress_callback(f"sft {cfg.task}", disable=quiet) as cb:
        rec = train_task_policy(cfg, on_progress=cb, log=lambda m: console.print(m, highlight=False, soft_wrap=True))
    console.print(f"{cfg.out}: {gold_line(rec)} (held-out prompts, temperature 1)", highlight=False, soft_wrap=True)
    stdout.print(to_json(rec), soft_wrap=True, highlight=False)


def run_sim_study(cfg, quiet: bool = False) -> None:
    """Run (or resume) the study (the verb table's ``sim-study`` row); its summary JSON on stdout."""
    from ..verbs import run_verb
    from .common import out as stdout

    result = run_verb("sim-study", cfg)
    stdout.print(to_json({k: result[k] for k in ("initial_policy", "reward_models", "ppo", "seconds")}, indent=1),
                 soft_wrap=True, highlight=False)


def register(app, **_):
    from ..sim.make import SimMakeConfig
    from ..sim.policy import SimPolicyConfig
    from .options import command_from_config, command_from_row

    app.add_typer(sim_app, name="sim")
    command_from_config(sim_app, "make", SimMakeConfig, run_sim_make,
                        help="Prompts, policy samples, oracle minimal edits (edits.jsonl), gold-preference pairs "
                             "(pairs.jsonl) and held-out sets of a simulated task. Rerun to resume.", resumable=True)
    command_from_config(sim_app, "policy", SimPolicyConfig, run_sim_policy,
                        help="A small causal LM trained from scratch for one task: a BPE tokenizer on the task's text, "
                             "SFT on synthetic answers (--error-rate), its starting gold recorded. Rerun to resume.",
                        resumable=True)
    command_from_row(sim_app, "sim-study", run_sim_study)
