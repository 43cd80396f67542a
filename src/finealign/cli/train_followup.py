"""``finealign train followup-sft``: fine-tune a follow-up model on natural-language feedback (TRL SFT).

Flags are generated from :class:`finealign.train.followup_sft.FollowupSFTConfig`; ``--config`` reads
the same fields from YAML, plus a ``trl:`` mapping passed to TRL.
"""

from __future__ import annotations


def run_followup(cfg, quiet: bool = False) -> None:
    """Fine-tune per ``cfg`` (the verb table's ``train-followup-sft``) with a progress bar (steps, rate, ETA,
    loss); prints the steps, loss and the scorer spec that uses the result."""
    from ..verbs import run_verb
    from .common import console, out as stdout, verb_hooks

    console.print(f"follow-up SFT on {cfg.data} from {cfg.model}{' (LoRA)' if cfg.lora else ''} -> {cfg.out}",
                  highlight=False, markup=False)
    with verb_hooks(quiet) as hooks:
        res = run_verb("train-followup-sft", cfg, hooks)
    loss = res.metrics.get("train_loss", res.metrics.get("loss"))
    stdout.print(f"followup-sft: {res.steps} steps, train loss {loss if loss is None else round(loss, 4)} -> "
                 f"{res.out}  (score with flr:{res.out},mode=finetuned)", highlight=False, markup=False)


def register(train_app, **_):
    from .options import command_from_row

    command_from_row(train_app, "train-followup-sft", run_followup)
