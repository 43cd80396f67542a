"""Thin wrappers of TRL's DPOTrainer and KTOTrainer for labeled data (``finealign label`` output).

1. read the pairs (``prompt/chosen/rejected``) or KTO labels (``prompt/completion/label``),
   checking every record (``path:line: field: problem``);
2. turn them into TRL's conversational format (string prompts become one user turn, so TRL applies
   the model's chat template, as ``finealign generate`` did when sampling);
3. load the model (any finealign model spec), optionally with fresh LoRA adapters (the reference
   model is then the base with adapters off);
4. train with TRL, resuming from the last checkpoint in ``out``; save model / adapter + tokenizer.

All TRL behaviour is TRL's; settings TRL has and this config does not name go under ``trl:`` in
the YAML overlay (e.g. ``trl: {loss_type: ipo, precompute_ref_log_probs: true}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.records import KTORecord, PairRecord, as_messages
from ..errors import DataError, FinealignError
from .trl_common import TrainResult, check_common, common_args, lora_config, train_and_save

METHODS = ("dpo", "kto")


@dataclass(frozen=True)
class PrefTrainConfig:
    """DPO / KTO training.

    method: dpo | kto. model: policy to start from (finealign model spec). data: pairs (dpo) or KTO
    labels (kto). out: output folder (checkpoints, the final model or LoRA adapter). beta: KL
    strength of DPO / KTO. learning_rate, epochs, max_steps (-1: by epochs), batch_size, grad_accum,
    max_length (prompt + completion tokens), logging_steps, save_steps, seed. dtype: float32 |
    bfloat16. lora: train LoRA adapters (lora_r, lora_alpha) instead of all weights.
    desirable_weight / undesirable_weight: KTO's class weights. trl: extra TRL config arguments.
    """

    method: str = "dpo"
    model: str = "smollm2-135m-instruct"
    data: Path | None = None
    out: Path | None = None
    beta: float = 0.1
    learning_rate: float = 5e-6
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    logging_steps: int = 10
    save_steps: int = 200
    seed: int = 0
    dtype: str = "float32"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    trl: dict | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise FinealignError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        check_common(self)
        if not self.beta > 0:
            raise FinealignError(f"beta must be positive, got {self.beta}")
        if self.desirable_weight <= 0 or self.undesirable_weight <= 0:
            raise FinealignError("KTO desirable_weight and undesirable_weight must be positive")


def _conv(prompt):
    return as_messages(prompt)


def _turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def read_pref_dataset(path: str | Path, method: str):
    """A ``datasets.Dataset`` in TRL's conversational format, with only TRL's columns."""
    from datasets import Dataset

    from ..data.io import read_records

    path = Path(path)
    kind = PairRecord if method == "dpo" else KTORecord
    recs = read_records(path, kind)
    if not recs:
        raise DataError(path, None, None, "no records")
    if method == "dpo":
        rows = [{"prompt": _conv(r.prompt), "chosen": _turn(r.chosen), "rejected": _turn(r.rejected)} for r in recs]
    else:
        rows = [{"prompt": _conv(r.prompt), "completion": _turn(r.completion), "label": r.label} for r in recs]
        labels = {r["label"] for r in rows}
        if len(labels) < 2:
            raise DataError(path, None, "label", f"KTO needs desirable and undesirable examples; all are {labels.pop()}")
    return Dataset.from_list(rows)


def build_trainer(cfg: PrefTrainConfig, model=None, tokenizer=None, dataset=None):
    """The TRL trainer for ``cfg`` (``model``/``tokenizer``/``dataset`` may be passed in, e.g. by tests)."""
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    from ..models import load_model

    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device="auto", padding_side="left")
    dataset = dataset if dataset is not None else read_pref_dataset(cfg.data, cfg.method)
    args = {"beta": cfg.beta, **common_args(cfg)}  # a `trl:` block in the recipe wins
    peft = lora_config(cfg.lora_r, cfg.lora_alpha) if cfg.lora else None
    if cfg.method == "dpo":
        return DPOTrainer(model=model, args=DPOConfig(**args), train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft), tokenizer
    args.update(desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)
    return KTOTrainer(model=model, args=KTOConfig(**args), train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft), tokenizer


def train_preference(cfg: PrefTrainConfig, *, model=None, tokenizer=None) -> TrainResult:
    """Run DPO or KTO per ``cfg``; the trained model (or adapter) is saved to ``cfg.out``."""
    trainer, tok = build_trainer(cfg, model, tokenizer)
    return train_and_save(trainer, cfg, tok, cfg.method)
