"""``finealign train ppo``: fine-grained (per-token) or sequence-level PPO; resumes on rerun.

Flags are generated from :class:`finealign.train.ppo_config.PPOConfig` (every field, with its help).
"""

from __future__ import annotations

from ..data.io import to_json


def run_ppo_cli(cfg, quiet: bool = False):
    """Run PPO for ``cfg`` (the verb table's ``train-ppo``) with a progress bar; prints a JSON summary on stdout."""
    from ..verbs import run_verb
    from .common import console, out as stdout, verb_hooks

    console.print(f"PPO: policy {cfg.model}, reward {cfg.reward}, granularity {cfg.granularity}, "
                  f"{cfg.steps} steps x {cfg.batch_size} rollouts -> {cfg.out}", soft_wrap=True)
    with verb_hooks(quiet) as hooks:
        result = run_verb("train-ppo", cfg, hooks)
    c = result.details["counters"]
    if c["skipped_batches"] or c["skipped_updates"] or c["truncated_prompts"] or c["empty_responses"]:
        console.print(f"warnings: {c['skipped_batches']} batches skipped (non-finite reward), {c['skipped_updates']} "
                      f"updates skipped (non-finite loss), {c['truncated_prompts']} prompts truncated, "
                      f"{c['empty_responses']} empty responses", soft_wrap=True)
    stdout.print(to_json({"out": str(result.out), "steps": result.steps, "last": result.metrics}),
                 soft_wrap=True, highlight=False)


def register(train_app, **_):
    from .options import command_from_row

    command_from_row(train_app, "train-ppo", run_ppo_cli)
