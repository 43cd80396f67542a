"""``finealign train dpo`` / ``finealign train kto``: thin wrappers of TRL's DPOTrainer / KTOTrainer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _make(method: str):
    def cmd(
        data: Optional[Path] = typer.Option(None, "--data", "-d", help="Pairs (dpo) or KTO labels (kto), e.g. from "
                                            "`finealign label`."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (a rerun resumes its last checkpoint)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Policy to start from (default: the built-in "
                                            "smollm2-135m-instruct)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe; flags given here override it."),
        beta: Optional[float] = typer.Option(None, "--beta"),
        learning_rate: Optional[float] = typer.Option(None, "--lr", "--learning-rate"),
        epochs: Optional[float] = typer.Option(None, "--epochs"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="-1: run by epochs."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        grad_accum: Optional[int] = typer.Option(None, "--grad-accum"),
        max_length: Optional[int] = typer.Option(None, "--max-length"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | bfloat16"),
        lora: Optional[bool] = typer.Option(None, "--lora/--full", help="Train LoRA adapters or all weights."),
        lora_r: Optional[int] = typer.Option(None, "--lora-r"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        logging_steps: Optional[int] = typer.Option(None, "--logging-steps"),
    ):
        from ..train.preference import PrefTrainConfig, train_preference
        from ..train.trl_common import overlay
        from .common import console, out as stdout

        cfg = overlay(PrefTrainConfig, config, method=method, data=data, out=out, model=model, beta=beta,
                      learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                      grad_accum=grad_accum, max_length=max_length, dtype=dtype, lora=lora, lora_r=lora_r, seed=seed,
                      logging_steps=logging_steps)
        if cfg.method != method:
            from ..errors import FinealignError

            raise FinealignError(f"{config}: method {cfg.method!r} given to `finealign train {method}`")
        console.print(f"{method.upper()} on {cfg.data} from {cfg.model}{' (LoRA)' if cfg.lora else ''} -> {cfg.out}")
        res = train_preference(cfg)
        loss = res.metrics.get("train_loss", res.metrics.get("loss"))
        stdout.print(f"{method}: {res.steps} steps, train loss {loss if loss is None else round(loss, 4)} -> {res.out}",
                     highlight=False, markup=False)

    cmd.__doc__ = (f"{method.upper()} with TRL's {method.upper()}Trainer on labeled data (YAML recipe + flags; "
                   "LoRA option).")
    return cmd


def register(train_app, **_):
    train_app.command("dpo")(_make("dpo"))
    train_app.command("kto")(_make("kto"))
