"""``finealign train token-rm`` (train a token-level reward model) and ``finealign eval token-rm``.

Flags are generated from :class:`finealign.train.token_rm_config.TokenRMConfig` and
:class:`EvalTokenRMConfig` (every field, with its help; ``--config`` reads the same fields from YAML).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings, positive, setting
from ..data.io import to_json
from .common import console, out


def run_train_token_rm(cfg, quiet: bool = False) -> None:
    """Train (or resume) ``cfg`` (the verb table's ``train-token-rm``); prints a JSON summary on stdout."""
    from ..verbs import run_verb
    from .common import verb_hooks

    with verb_hooks(quiet) as hooks:
        res = run_verb("train-token-rm", cfg, hooks)
    d = res.details
    summary = {"out": str(res.out), "step": res.steps, "finished": res.finished, "train_pairs": d["build"],
               "trained_on_pairs": d["trained_pairs"], "train_tokens": d["train_tokens"],
               "seconds": round(d["seconds"], 1), "eval": res.metrics or None}
    out.print_json(to_json(summary))
    if not res.finished:
        console.print(f"stopped at step {res.steps}; rerun the same command to resume")


@dataclass(kw_only=True)
class EvalTokenRMConfig(Settings):
    """Evaluate a token RM on edit pairs: pairwise accuracy (edited > original), token AUROC, precision/recall."""

    token_rm: str = setting(None, positional=True, required=True,
                            help="A trained token RM folder (finealign train token-rm --out); a training folder "
                                 "without a final model is evaluated at its last checkpoint.")
    data: list[str] = setting(default_factory=list, short="-d", required=True,
                              help="Held-out edit pairs: a file or data set name, optionally NAME[a:b]. Repeatable.")
    out: str | None = setting(None, short="-o", deprecated=("--output",),
                              help="Also write the metrics JSON here (atomically).")
    max_length: int = setting(512, check=positive,
                              help="Tokens per sequence; longer prompts lose their oldest context.")
    limit: int | None = setting(None, check=positive, help="Evaluate the first N pairs.")
    batch_size: int = setting(8, check=positive, help="Pairs per batch.")
    threshold: float | None = setting(None, help="Flag tokens with reward below this as changed (precision/recall); "
                                      "default: the model's natural threshold (0 for a Bradley-Terry RM, "
                                      "log 0.5 for a token classifier).")
    mixed_precision: str = setting("no", choices=("no", "bf16"),
                                   help="no | bf16 (autocast; faster on CPUs with AMX and on GPUs).")


def run_eval_token_rm(cfg: EvalTokenRMConfig, quiet: bool = False) -> None:
    """Evaluate; prints the metrics JSON on stdout (and writes it to ``cfg.out`` when set)."""
    import torch

    from ..data.io import write_json
    from ..eval.token_rm_eval import evaluate_token_rm
    from ..models.token_rm import is_token_rm_dir, load_token_rm
    from ..models.token_rm_data import build_pair_examples, load_edit_sources
    from ..train.token_rm import load_checkpoint_model
    from .common import progress

    step = None
    if is_token_rm_dir(cfg.token_rm):
        model, tok = load_token_rm(cfg.token_rm)
    else:
        model, tok, step = load_checkpoint_model(cfg.token_rm)
        console.print(f"{cfg.token_rm}: no final model; evaluating its checkpoint at step {step}")
    recs = load_edit_sources(cfg.data)
    pairs, st = build_pair_examples(recs[:cfg.limit] if cfg.limit else recs, tok, cfg.max_length)
    console.print(st.summary())
    dev = next(model.parameters()).device.type
    amp = torch.autocast(dev, dtype=torch.bfloat16, enabled=cfg.mixed_precision == "bf16")
    with progress(disable=quiet) as bar, amp:
        task = bar.add_task("eval-token-rm", total=len(pairs), info="")
        ev = evaluate_token_rm(model, pairs, tok.pad_token_id, batch_size=cfg.batch_size, threshold=cfg.threshold,
                               on_batch=lambda n: bar.advance(task, n))
    kind = model.spec.reward
    result = {"token_rm": cfg.token_rm, "checkpoint_step": step, "data": cfg.data, "pairs": st._asdict(),
              "reward": kind, "threshold_is": "given" if cfg.threshold is not None else (
                  "the default for log P(fine) rewards: log 0.5, P(fine) < 1/2" if kind == "log_sigmoid"
                  else "the default for logit rewards: 0"), **ev.to_dict()}
    if cfg.out is not None:
        write_json(cfg.out, result)
    out.print_json(to_json(result))


def register(train_app, eval_app, **_):
    from .options import command_from_config, command_from_row

    command_from_row(train_app, "train-token-rm", run_train_token_rm)
    command_from_config(eval_app, "token-rm", EvalTokenRMConfig, run_eval_token_rm)
