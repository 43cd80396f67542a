"""``finealign train dpo`` / ``finealign train kto``: thin wrappers of TRL's DPOTrainer / KTOTrainer.

Flags are generated from :class:`finealign.train.preference.PrefTrainConfig` (``method`` is set by
the command); ``--config`` reads the same fields from YAML, plus a ``trl:`` mapping passed to TRL.
"""

from __future__ import annotations


def run_pref(cfg, quiet: bool = False) -> None:
    """Train DPO or KTO per ``cfg``: a progress bar (steps, rate, ETA, loss) and one status line per logging
    step on stderr (none with ``quiet``)."""
    from ..train.preference import train_preference
    from .common import console, out as stdout, progress_callback, step_info

    method = cfg.method
    console.print(f"{method.upper()} on {cfg.data} from {cfg.model}{' (LoRA)' if cfg.lora else ''} -> {cfg.out}",
                  highlight=False, markup=False)

    def on_log(step: int, logs: dict) -> None:  # one short status line per logging step, on stderr
        keys = ("loss", "rewards/accuracies", "rewards/margins", "kl")
        shown = "  ".join(f"{k} {logs[k]:.4g}" for k in keys if isinstance(logs.get(k), (int, float)))
        if shown:
            console.print(f"step {step}: {shown}", highlight=False, markup=False)

    with progress_callback(method, disable=quiet) as bar:
        res = train_preference(cfg, on_log=None if quiet else on_log,
                               on_step=lambda step, total, m: bar(step, total, step_info(m, ("loss",))))
    loss = res.metrics.get("train_loss", res.metrics.get("loss"))
    stdout.print(f"{method}: {res.steps} steps, train loss {loss if loss is None else round(loss, 4)} -> {res.out}",
                 highlight=False, markup=False)


def register(train_app, **_):
    from ..train.preference import PrefTrainConfig
    from .options import command_from_config

    for method in ("dpo", "kto"):
        command_from_config(train_app, method, PrefTrainConfig, run_pref, fixed={"method": method},
                            help=f"{method.upper()} with TRL's {method.upper()}Trainer on labeled data (YAML recipe + "
                                 "flags; LoRA option). Rerun the same command to resume.", resumable=True)
