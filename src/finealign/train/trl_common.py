"""Shared plumbing of the thin TRL wrappers (DPO, KTO, follow-up SFT): common settings, LoRA, saving.

Settings are :class:`TRLTrainArgs` dataclasses on :mod:`finealign.config` (defaults < the YAML file
``--config`` < flags, via ``config.build_config``). A YAML key ``trl:`` holds any further TRL
config arguments, passed through as is.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ModelArgs, RunArgs, positive, setting
from ..errors import ConfigError
from .result import TrainResult  # the wrappers' result: out, optimizer steps, final metrics, log history


# ------------------------------------------------------------------ the settings every wrapper shares

def _steps(v) -> str | None:
    return None if v == -1 or v > 0 else f"must be positive, or -1 to run by epochs; got {v}"


@dataclass(kw_only=True)
class TRLTrainArgs(ModelArgs, RunArgs):
    """Settings every thin TRL wrapper shares (model, data, output, optimisation, LoRA, ``trl:``).

    ``trl`` (YAML only) holds further TRL config arguments, passed through as is; they win over
    the fields here. ``mixed_precision bf16`` (or ``dtype bfloat16``) sets TRL's ``bf16``.
    """

    data: str = setting(None, reads="file", short="-d", required=True, help="Training data file.")
    out: str = setting(None, identity=False, short="-o", required=True,
                       help="Output folder (checkpoints, then the model or LoRA adapter); a rerun resumes its last "
                            "checkpoint.")
    model: str = setting("smollm2-135m-instruct", reads="model", short="-m",
                         help="Model to start from (built-in name, .gguf file, "
                              "directory or hub id).")
    mixed_precision: str = setting("no", choices=("no", "bf16"), help="Autocast: no | bf16 (TRL's bf16).")
    learning_rate: float = setting(5e-6, flag="--lr", deprecated=("--learning-rate",), check=positive,
                                   help="Learning rate.")
    epochs: float = setting(1.0, check=positive, help="Epochs over the data (when --steps is -1).")
    steps: int = setting(-1, deprecated=("--max-steps",), check=_steps,
                         help="Optimizer steps (-1: run by --epochs).")
    batch_size: int = setting(4, check=positive, help="Examples per device per step.")
    grad_accum: int = setting(1, check=positive, help="Gradient accumulation steps.")
    max_length: int = setting(1024, check=positive, help="Tokens per example (prompt + completion) at most.")
    logging_steps: int = setting(10, identity=False, check=positive, help="Steps between logged metrics.")
    save_steps: int = setting(200, identity=False, check=positive, help="Steps between checkpoints.")
    lora: bool = setting(False, deprecated_off=("--full",), help="Train LoRA adapters instead of all weights.")
    lora_r: int = setting(16, check=positive, help="LoRA rank.")
    lora_alpha: int = setting(32, check=positive, help="LoRA alpha.")
    trl: dict | None = setting(None, cli=False, help="Further TRL config arguments (YAML only), passed through as "
                                                     "is; they win over the fields above.")

    def validate(self):
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError("dtype", f"{self.dtype!r}: train in float32 or bfloat16")
        if self.trl is not None and not isinstance(self.trl, dict):
            raise ConfigError("trl", "must be a mapping of TRL config arguments")


def lora_config(r: int, alpha: int, dropout: float = 0.0):
    """The ``peft.LoraConfig`` TRL's trainers get (``LoraOptions.peft_config``, all linear layers)."""
    from ..models.loading import LoraOptions

    return LoraOptions(r=r, alpha=alpha, dropout=dropout).peft_config()


def common_args(cfg) -> dict:
    """TRL / transformers ``TrainingArguments`` shared by the wrappers, from a config with the usual fields."""
    import torch

    args = dict(output_dir=str(cfg.out), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
                max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
                gradient_accumulation_steps=cfg.grad_accum, logging_steps=cfg.logging_steps, seed=cfg.seed,
                report_to="none", save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
                max_length=cfg.max_length, bf16=cfg.dtype == "bfloat16" or cfg.mixed_precision == "bf16",
                use_cpu=cfg.device == "cpu" or not torch.cuda.is_available(), disable_tqdm=True)
    args.update(cfg.trl or {})
    return args


def route_logs(trainer, on_log=None, on_step=None) -> None:
    """Take the trainer's log lines off stdout: transformers' printer / progress callbacks print each
    raw metrics dict there; ``on_log(step, logs)`` (optional) gets them instead, and ``on_step(step,
    total, metrics)`` (optional) is called after every optimizer step (``total``: the run's steps,
    ``metrics``: the last logged ones), the same shape as the token RM's and PPO's ``on_step``."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if on_log is None and on_step is None:
        return
    last: dict = {}

    class _Report(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if on_step is not None:
                on_step(state.global_step, state.max_steps, dict(last))

        def on_log(self, args, state, control, logs=None, **kw):
            last.update({k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))})
            if on_log is not None:
                on_log(state.global_step, dict(logs or {}))

        def on_step_end(self, args, state, control, **kw):
            if on_step is not None:
                on_step(state.global_step, state.max_steps, dict(last))

    trainer.add_callback(_Report())


def train_and_save(trainer, cfg, tokenizer, kind: str, on_log=None, on_step=None) -> TrainResult:
    """Train (resuming from the last checkpoint in ``cfg.out`` if there is one), save the model (or
    LoRA adapter) and tokenizer to ``cfg.out``, then ``finealign_train.json`` last, as the marker of a
    finished run. Nothing is printed on stdout; ``on_log(step, logs)`` receives the logged metrics and
    ``on_step(step, total, metrics)`` every step (a progress bar, :func:`route_logs`)."""
    from transformers.trainer_utils import get_last_checkpoint

    route_logs(trainer, on_log, on_step)
    out = Path(cfg.out)
    tie_output(cfg, kind)
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
    return TrainResult(out, trainer.state.global_step, metrics=metrics, history=hist)


def tie_output(cfg, kind: str) -> None:
    """Tie ``cfg.out`` to the run's identity (``data.identity.output_identity``: the settings that change the
    trained weights, the model's and the data's fingerprints) before training: resuming checkpoints made
    by another run is refused, naming the differing setting; ``cfg.overwrite`` (when the config has it)
    deletes the checkpoints and the finished-run marker first."""
    from ..data.identity import check_verb
    from ..rewards.inputs import output_identity
    from ..data.manifest import prepare_output

    out = Path(cfg.out)
    check_verb(out, kind, claim=False)  # a folder made by another verb (PPO, a token RM) is refused, naming it
    done = [p for p in out.glob("checkpoint-*") if p.is_dir()] + [p for p in [out / "finealign_train.json"] if p.exists()]
    prepare_output(out, kind, output_identity(cfg), overwrite=bool(getattr(cfg, "overwrite", False)), folder=True,
                   side_files=done, has_content=bool(done))


def dump(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
