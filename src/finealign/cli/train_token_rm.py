"""``finealign train token-rm`` (train a token-level reward model) and ``finealign eval-token-rm``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .common import console, out, progress


def train_token_rm_cmd(
    data: Optional[List[str]] = typer.Option(None, "--data", help="Edit pairs (prompt/original/edited): a file or a data set name "
                                             "(defacto-train, qa-feedback-edits, expertqa-edits), optionally sliced: NAME\\[a:b]. Repeatable."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Output folder (model, checkpoint/, metrics.jsonl, eval.json)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Backbone spec (default smollm2-135m-instruct)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="span_bt (default) | seq_bt | token_cls"),
    eval_data: Optional[List[str]] = typer.Option(None, "--eval-data", help="Held-out edit pairs (file or data set name). Repeatable."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate every N steps (0: at the end only)."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="Evaluate on the first N held-out pairs."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Train on N pairs (a seeded, nested subset)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Pairs per step per process."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 1e-4)."),
    lr_schedule: Optional[str] = typer.Option(None, "--lr-schedule", help="linear | constant | cosine"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps"),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per sequence (oldest context is cut)."),
    lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA adapters (default) or full fine-tuning."),
    top_layers: Optional[int] = typer.Option(None, "--top-layers", help="Train only the top N decoder layers (0 = all)."),
    lora_r: Optional[int] = typer.Option(None, "--lora-r"),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N steps."),
    log_every: Optional[int] = typer.Option(None, "--log-every"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | bfloat16"),
    mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="no | bf16 | fp16 (autocast)."),
    report_to: Optional[str] = typer.Option(None, "--report-to", help="tensorboard,wandb (comma-separated) or none."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Stop after N steps in this call (rerun resumes)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file of TokenRMConfig fields; flags override it."),
    no_progress: bool = typer.Option(False, "--no-progress"),
):
    """Train a token-level reward model on minimal-edit pairs. Rerun the same command to resume."""
    from ..train.token_rm import TokenRMConfig, train_token_rm

    given = dict(data=data or None, out=out_dir, model=model, loss=loss, eval_data=eval_data or None,
                 eval_every=eval_every, eval_limit=eval_limit, limit=limit, max_steps=max_steps,
                 batch_size=batch_size, learning_rate=lr, lr_schedule=lr_schedule, warmup_steps=warmup_steps,
                 max_length=max_length, lora=lora, top_layers=top_layers, lora_r=lora_r, save_every=save_every,
                 log_every=log_every, seed=seed, dtype=dtype, mixed_precision=mixed_precision, report_to=report_to, stop_after=stop_after)
    if config is not None:
        cfg = TokenRMConfig.from_yaml(config, **given)
    else:
        cfg = TokenRMConfig(**{k: v for k, v in given.items() if v is not None})
    res = train_token_rm(cfg, console=console, show_progress=not no_progress)
    summary = {"out": str(res.out), "step": res.step, "finished": res.finished, "train_pairs": res.build,
               "trained_on_pairs": res.trained_pairs,
               "train_tokens": res.train_tokens, "seconds": round(res.seconds, 1), "eval": res.final_eval}
    out.print_json(json.dumps(summary))
    if not res.finished:
        console.print(f"stopped at step {res.step}; rerun the same command to resume")


def eval_token_rm_cmd(
    token_rm: str = typer.Argument(..., help="A trained token RM folder (finealign train token-rm --out); a training "
                                   "folder without a final model is evaluated at its last checkpoint."),
    data: List[str] = typer.Option(..., "--data", help="Held-out edit pairs: a file or data set name, optionally NAME\\[a:b]. Repeatable."),
    max_length: int = typer.Option(512, "--max-length"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate the first N pairs."),
    batch_size: int = typer.Option(8, "--batch-size"),
    threshold: float = typer.Option(0.0, "--threshold", help="Flag tokens with reward below this as changed (precision/recall)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the metrics JSON here (atomically)."),
    mixed_precision: str = typer.Option("no", "--mixed-precision", help="no | bf16 (autocast; faster on CPUs with AMX and on GPUs)."),
    no_progress: bool = typer.Option(False, "--no-progress"),
):
    """Evaluate a token RM on edit pairs: pairwise accuracy (edited > original), token AUROC, precision/recall."""
    import torch

    from ..data.io import write_json
    from ..errors import FinealignError
    from ..eval.token_rm_eval import evaluate_token_rm
    from ..models.token_rm import load_token_rm
    from ..train.token_rm_data import build_pair_examples, load_edit_sources

    from ..models.token_rm import is_token_rm_dir
    from ..train.token_rm import load_checkpoint_model

    if mixed_precision not in ("no", "bf16"):  # before any loading
        raise FinealignError(f"--mixed-precision: expected no or bf16, got {mixed_precision!r}")
    step = None
    if is_token_rm_dir(token_rm):
        model, tok = load_token_rm(token_rm)
    else:
        model, tok, step = load_checkpoint_model(token_rm)
        console.print(f"{token_rm}: no final model; evaluating its checkpoint at step {step}")
    recs = load_edit_sources(data)
    pairs, st = build_pair_examples(recs[:limit] if limit else recs, tok, max_length)
    console.print(st.summary())
    dev = next(model.parameters()).device.type
    amp = torch.autocast(dev, dtype=torch.bfloat16, enabled=mixed_precision == "bf16")
    with progress(disable=no_progress) as bar, amp:
        task = bar.add_task("eval-token-rm", total=len(pairs), info="")
        ev = evaluate_token_rm(model, pairs, tok.pad_token_id, batch_size=batch_size, threshold=threshold,
                               on_batch=lambda n: bar.advance(task, n))
    result = {"token_rm": token_rm, "checkpoint_step": step, "data": data, "pairs": st._asdict(), **ev.to_dict()}
    if output is not None:
        write_json(output, result)
    out.print_json(json.dumps(result))


def register(app, train_app, **_):
    train_app.command("token-rm")(train_token_rm_cmd)
    app.command("eval-token-rm")(eval_token_rm_cmd)
