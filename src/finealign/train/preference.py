"""Thin wrappers of TRL's DPOTrainer and KTOTrainer for labeled data (``finealign label`` output).

1. read the pairs (``prompt/chosen/rejected``) or KTO labels (``prompt/completion/label``),
   checking every record (``path:line: field: problem``);
2. turn them into TRL's conversational format (string prompts become one user turn, so TRL applies
   the model's chat template, as ``finealign generate`` did when sampling); prompts that already
   carry the template make the whole set standard format (every prompt rendered, ``data.chat``);
   pairs whose chosen and rejected are the same text are skipped and counted;
3. load the model (any finealign model spec), optionally with fresh LoRA adapters (the reference
   model is then the base with adapters off);
4. train with TRL, resuming from the last checkpoint in ``out``; save model / adapter + tokenizer.

All TRL behaviour is TRL's; settings TRL has and this config does not name go under ``trl:`` in
the YAML overlay (e.g. ``trl: {loss_type: ipo, precompute_ref_log_probs: true}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import positive, setting
from ..core.align import same_text
from ..data.chat import is_rendered, trl_completion, trl_prompt
from ..data.records import KTORecord, PairRecord
from ..errors import DataError
from .trl_common import TrainResult, TRLTrainArgs, common_args, lora_config, train_and_save

METHODS = ("dpo", "kto")


def _desc(v) -> str | None:
    return None if v > 0 else f"must be positive, got {v}"


@dataclass(kw_only=True)
class PrefTrainConfig(TRLTrainArgs):
    """DPO / KTO training with TRL (every field is a flag of ``finealign train dpo|kto`` and a YAML key).

    ``method`` is set by the command (``train dpo`` / ``train kto``); a YAML file may name it only
    when it agrees.
    """

    method: str = setting("dpo", choices=METHODS, cli=False, help="dpo | kto (set by the command).")
    data: str = setting(None, reads="file", short="-d", required=True,
                        help="Pairs prompt/chosen/rejected (dpo) or KTO labels prompt/completion/label (kto), e.g. "
                             "from `finealign label`.")
    model: str = setting("smollm2-135m-instruct", reads="model", short="-m",
                         help="Policy to start from (built-in name, .gguf file, directory or hub id).")
    beta: float = setting(0.1, check=positive, help="KL strength of DPO / KTO.")
    learning_rate: float = setting(5e-6, flag="--lr", deprecated=("--learning-rate",), check=positive,
                                   help="Learning rate.")
    lora: bool = setting(False, deprecated_off=("--full",),
                         help="Train LoRA adapters (the reference is the base with adapters off) instead of all "
                              "weights.")
    desirable_weight: float = setting(1.0, check=_desc, help="KTO: weight of desirable examples.")
    undesirable_weight: float = setting(1.0, check=_desc, help="KTO: weight of undesirable examples.")


def pref_rows(recs, method: str, tokenizer=None) -> tuple[list[dict], int]:
    """TRL rows of pair / KTO records, and how many pairs were left out as ties (chosen and rejected
    the same text, ``core.align.same_text``).

    Conversational format (string prompts become one user turn, so TRL applies the chat template as
    ``finealign generate`` did); when a prompt already carries the template (``data.chat``), every
    prompt is rendered to a string instead (standard format, one format per dataset).
    """
    conv = not (tokenizer is not None and any(is_rendered(r.prompt, tokenizer) for r in recs))

    def prompt(p):
        return trl_prompt(p, conversational=conv, tokenizer=None if conv else tokenizer)

    def turn(t):
        return trl_completion(t, conversational=conv)

    if method == "dpo":
        keep = [r for r in recs if not same_text(r.chosen, r.rejected)]
        return [{"prompt": prompt(r.prompt), "chosen": turn(r.chosen), "rejected": turn(r.rejected)}
                for r in keep], len(recs) - len(keep)
    return [{"prompt": prompt(r.prompt), "completion": turn(r.completion), "label": r.label} for r in recs], 0


def fit_pref_rows(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int, list[int]]:
    """Rows whose prompt + longest completion fit ``max_length`` tokens, their oldest context cut
    first (``models.window.fit_prompt``; docs/long-inputs.md). TRL itself would cut the *end* of the
    sequence (``keep_start``), i.e. the completions being compared. Returns (rows kept, prompts cut,
    indices of rows refused because a completion alone does not fit)."""
    from ..errors import FinealignError
    from ..models.window import fit_prompt

    kept, cut, refused = [], 0, []
    for i, row in enumerate(rows):
        turns = [row[k] for k in ("chosen", "rejected", "completion") if k in row]
        conv = isinstance(row["prompt"], list)
        if conv:
            renders = [lambda q, t=t: tokenizer.apply_chat_template(list(q) + list(t), tokenize=False) for t in turns]
        else:
            renders = [lambda q, t=t: q + t for t in turns]
        prompt = row["prompt"]
        try:
            for render in renders:  # every completion must fit after the (shared) prompt
                fit = fit_prompt(tokenizer, prompt, max_length, render=render, as_text=not conv)
                prompt = fit.prompt
        except FinealignError:
            refused.append(i)
            continue
        cut += prompt is not row["prompt"]
        kept.append({**row, "prompt": prompt})
    return kept, cut, refused


def read_pref_dataset(path: str | Path, method: str, tokenizer=None, max_length: int | None = None):
    """A ``datasets.Dataset`` in TRL's format (``pref_rows``), with only TRL's columns. Identical
    chosen/rejected pairs are skipped with a warning that counts them. With ``tokenizer`` and
    ``max_length``, over-long rows lose their oldest context (``fit_pref_rows``), counted in a warning;
    a row whose completion alone does not fit is refused, named by its record number."""
    import warnings

    from datasets import Dataset

    from ..data.io import read_records

    path = Path(path)
    kind = PairRecord if method == "dpo" else KTORecord
    recs = read_records(path, kind)
    if not recs:
        raise DataError(path, None, None, "no records")
    rows, ties = pref_rows(recs, method, tokenizer)
    if ties:
        warnings.warn(f"{path}: skipped {ties} of {len(recs)} pairs whose chosen and rejected texts are the same "
                      "(ties teach no preference)", stacklevel=2)
    if tokenizer is not None and max_length is not None:
        numbers = [k + 1 for k, r in enumerate(recs) if method != "dpo" or not same_text(r.chosen, r.rejected)]
        rows, cut, refused = fit_pref_rows(rows, tokenizer, max_length)
        if cut:
            warnings.warn(f"{path}: prompts cut to fit max_length: {cut} (their oldest context; "
                          "docs/long-inputs.md)", stacklevel=2)
        for i in refused:
            warnings.warn(f"{path}: record {numbers[i]}: a completion alone exceeds max_length {max_length} "
                          "tokens; record refused", stacklevel=2)
    if not rows:
        raise DataError(path, None, None, "no usable pairs (every chosen equals its rejected)")
    if method == "kto":
        labels = {r["label"] for r in rows}
        if len(labels) < 2:
            raise DataError(path, None, "label", f"KTO needs desirable and undesirable examples; all are {labels.pop()}")
    return Dataset.from_list(rows)


def build_trainer(cfg: PrefTrainConfig, model=None, tokenizer=None, dataset=None):
    """The TRL trainer for ``cfg`` (``model``/``tokenizer``/``dataset`` may be passed in, e.g. by tests)."""
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    from ..models import load_model

    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, padding_side="left")
    dataset = dataset if dataset is not None else read_pref_dataset(cfg.data, cfg.method, tokenizer, cfg.max_length)
    args = {"beta": cfg.beta, **common_args(cfg)}  # a `trl:` block in the recipe wins
    peft = lora_config(cfg.lora_r, cfg.lora_alpha) if cfg.lora else None
    if cfg.method == "dpo":
        return DPOTrainer(model=model, args=DPOConfig(**args), train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft), tokenizer
    args.update(desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)
    return KTOTrainer(model=model, args=KTOConfig(**args), train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft), tokenizer


def train_preference(cfg: PrefTrainConfig, *, model=None, tokenizer=None, on_log=None, on_step=None) -> TrainResult:
    """Run DPO or KTO per ``cfg``; the trained model (or adapter) is saved to ``cfg.out``.
    ``on_log(step, metrics)`` receives TRL's logged metrics and ``on_step(step, total, metrics)`` every
    optimizer step (nothing is printed on stdout)."""
    trainer, tok = build_trainer(cfg, model, tokenizer)
    return train_and_save(trainer, cfg, tok, cfg.method, on_log=on_log, on_step=on_step)
