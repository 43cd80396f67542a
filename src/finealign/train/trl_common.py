"""Shared plumbing of the thin TRL wrappers (DPO, KTO, follow-up SFT): YAML overlay, LoRA, saving.

Precedence of settings: the dataclass defaults < the YAML file (``--config``) < flags given on the
command line. A YAML key ``trl:`` holds any further TRL config arguments, passed through as is.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import FinealignError


class TrainResult(NamedTuple):
    """Where the model went, how many optimizer steps ran, the final logged metrics and the log history."""

    out: Path
    steps: int
    metrics: dict
    history: list


def overlay(cls, yaml_path: str | Path | None = None, **flags):
    """``cls`` built from its defaults, then ``yaml_path``'s keys, then the non-None ``flags``."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if yaml_path is not None:
        import yaml

        p = Path(yaml_path)
        if not p.is_file():
            raise FinealignError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise FinealignError(f"{p}: malformed YAML: {e}") from None
        if not isinstance(data, dict):
            raise FinealignError(f"{p}: expected a mapping of settings")
        unknown = sorted(set(data) - names)
        if unknown:
            raise FinealignError(f"{p}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        values.update(data)
    values.update({k: v for k, v in flags.items() if v is not None})
    for k in ("data", "out", "eval_data"):
        if k in values and values[k] is not None and k in names:
            values[k] = Path(values[k])
    try:
        return cls(**values)
    except TypeError as e:
        raise FinealignError(f"bad settings: {e}") from None


def lora_config(r: int, alpha: int, dropout: float = 0.0):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def common_args(cfg) -> dict:
    """TRL / transformers ``TrainingArguments`` shared by the wrappers, from a config with the usual fields."""
    import torch

    args = dict(output_dir=str(cfg.out), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
                max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
                gradient_accumulation_steps=cfg.grad_accum, logging_steps=cfg.logging_steps, seed=cfg.seed,
                report_to="none", save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
                max_length=cfg.max_length, bf16=cfg.dtype in ("bfloat16", "bf16"),
                use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    args.update(cfg.trl or {})
    return args


def train_and_save(trainer, cfg, tokenizer, kind: str) -> TrainResult:
    """Train (resuming from the last checkpoint in ``cfg.out`` if there is one), save the model (or
    LoRA adapter) and tokenizer to ``cfg.out``, then ``finealign_train.json`` last, as the marker of a
    finished run."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.out)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    hist = [dict(h) for h in trainer.state.log_history]
    metrics = {k: v for h in hist for k, v in h.items() if isinstance(v, (int, float))}
    from ..data.io import write_json

    cfg_obj = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    write_json(out / "finealign_train.json", {"trainer": kind, "config": cfg_obj, "steps": trainer.state.global_step,
                                              "resumed_from": last, "seconds": round(time.perf_counter() - t0, 1),
                                              "log_history": hist})
    return TrainResult(out, trainer.state.global_step, metrics, hist)


def check_common(cfg) -> None:
    """Validate the fields every wrapper config has."""
    if cfg.data is None:
        raise FinealignError("no training data given (--data or `data:` in the config)")
    if cfg.out is None:
        raise FinealignError("no output folder given (--out or `out:` in the config)")
    for name in ("learning_rate", "epochs"):
        if not getattr(cfg, name) > 0:
            raise FinealignError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("batch_size", "grad_accum", "max_length", "logging_steps", "save_steps", "lora_r", "lora_alpha"):
        if int(getattr(cfg, name)) < 1:
            raise FinealignError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.dtype not in ("float32", "fp32", "bfloat16", "bf16"):
        raise FinealignError(f"dtype must be float32 or bfloat16, got {cfg.dtype!r}")
    if cfg.trl is not None and not isinstance(cfg.trl, dict):
        raise FinealignError("`trl:` must be a mapping of TRL config arguments")


def dump(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
