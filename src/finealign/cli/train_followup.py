"""``finealign train followup-sft``: fine-tune a follow-up model on natural-language feedback (TRL SFT)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(train_app, **_):
    @train_app.command("followup-sft")
    def followup_sft_cmd(
        data: Optional[str] = typer.Option(None, "--data", "-d", help="prompt/response/feedback file, or "
                                           "prometheus-vicuna | prometheus-mt-bench (GPT-4 feedback)."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (a rerun resumes its last checkpoint)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to fine-tune (default: the built-in "
                                            "smollm2-135m-instruct)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML recipe; flags given here override it."),
        feedback_per_item: Optional[int] = typer.Option(None, "--feedback-per-item", help="Built-in sources: "
                                                        "feedback texts kept per item (0 = all 3)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N examples (0 = all)."),
        learning_rate: Optional[float] = typer.Option(None, "--lr", "--learning-rate"),
        epochs: Optional[float] = typer.Option(None, "--epochs"),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="-1: run by epochs."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        grad_accum: Optional[int] = typer.Option(None, "--grad-accum"),
        max_length: Optional[int] = typer.Option(None, "--max-length"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | bfloat16"),
        lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA adapters (default) or all weights."),
        lora_r: Optional[int] = typer.Option(None, "--lora-r"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        logging_steps: Optional[int] = typer.Option(None, "--logging-steps"),
    ):
        """SFT a follow-up model on (prompt, response, feedback) in the role-swapped template; score with
        flr:OUT,mode=finetuned."""
        from ..train.followup_sft import FollowupSFTConfig, train_followup
        from ..train.trl_common import overlay
        from .common import console, out as stdout

        cfg = overlay(FollowupSFTConfig, config, data=data, out=out, model=model, feedback_per_item=feedback_per_item,
                      limit=limit, learning_rate=learning_rate, epochs=epochs, max_steps=max_steps,
                      batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, dtype=dtype, lora=lora,
                      lora_r=lora_r, seed=seed, logging_steps=logging_steps)
        console.print(f"follow-up SFT on {cfg.data} from {cfg.model}{' (LoRA)' if cfg.lora else ''} -> {cfg.out}")
        res = train_followup(cfg)
        loss = res.metrics.get("train_loss", res.metrics.get("loss"))
        stdout.print(f"followup-sft: {res.steps} steps, train loss {loss if loss is None else round(loss, 4)} -> "
                     f"{res.out}  (score with flr:{res.out},mode=finetuned)", highlight=False, markup=False)
