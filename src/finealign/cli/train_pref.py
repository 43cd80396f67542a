"""``finealign train dpo`` / ``finealign train kto``: thin wrappers of TRL's DPOTrainer / KTOTrainer.

Flags are generated from :class:`finealign.train.preference.PrefTrainConfig` (``method`` is set by
the command); ``--config`` reads the same fields from YAML, plus a ``trl:`` mapping passed to TRL.
"""

from __future__ import annotations


def run_pref(cfg, quiet: bool = False) -> None:
    """Train DPO or KTO per ``cfg`` (the verb table's ``train-dpo`` / ``train-kto``): a progress bar (steps,
    rate, ETA, loss) and one status line per logging step on stderr (none with ``quiet``)."""
    from ..verbs import run_verb
    from .common import console, out as stdout, verb_hooks

    method = cfg.method
    console.print(f"{method.upper()} on {cfg.data} from {cfg.model}{' (LoRA)' if cfg.lora else ''} -> {cfg.out}",
                  highlight=False, markup=False)
    with verb_hooks(quiet, steps=True) as hooks:
        res = run_verb(f"train-{method}", cfg, hooks)
    loss = res.metrics.get("train_loss", res.metrics.get("loss"))
    stdout.print(f"{method}: {res.steps} steps, train loss {loss if loss is None else round(loss, 4)} -> {res.out}",
                 highlight=False, markup=False)


def register(train_app, **_):
    from .options import command_from_row

    for method in ("dpo", "kto"):
        command_from_row(train_app, f"train-{method}", run_pref)
