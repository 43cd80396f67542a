"""Configuration of token reward model training: one dataclass on :mod:`finealign.config`.

Every field is a flag of ``finealign train token-rm`` (generated from this class) and a key of its
``--config`` YAML; validation lives here and raises ``ConfigError`` (``field: problem``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ModelArgs, build_config, non_negative, positive, setting
from ..errors import ConfigError
from .result import REPORT_TO, SCHEDULES

LOSSES = ("span_bt", "span_bt_pure", "seq_bt", "token_cls")  # = core.token_rm.LOSSES (a test), kept here: no torch

# Settings renamed since the first release, under their old names in ``train_config.json`` and in the
# checkpoint's fingerprint (so a run started by an older finealign still resumes).
_OLD_NAMES = {"steps": "max_steps"}
# Settings added since, left out of both while they hold their default (same reason).
_NEW_SETTINGS = {"device": "auto", "gradient_checkpointing": None}


def _at_least_16(v) -> str | None:
    return None if v >= 16 else f"must be at least 16, got {v}"


@dataclass(kw_only=True)
class TokenRMConfig(ModelArgs):
    """Everything one token RM training run needs; saved as ``OUT/train_config.json``."""

    data: list[str] = setting(reads="file", default_factory=list, short="-d", required=True,
                              help="Edit pairs (prompt/original/edited): a file or a data set name (defacto-train, "
                                   "qa-feedback-edits, expertqa-edits), optionally sliced NAME[a:b]. Repeatable.")
    out: str = setting(None, identity=False, short="-o", required=True,
                       help="Output folder (the model, checkpoint/, metrics.jsonl, eval.json); a rerun resumes.")
    model: str = setting("smollm2-135m-instruct", reads="model", short="-m",
                         help="Backbone spec (built-in name, .gguf, directory, "
                              "hub id).")
    loss: str = setting("span_bt", choices=LOSSES, help="span_bt (edited spans, Bradley-Terry, unchanged tokens "
                                                        "anchored at 0) | span_bt_pure (the paper's span loss, no "
                                                        "anchor) | seq_bt (whole responses) | token_cls (per-token "
                                                        "labels: changed bad, unchanged good).")
    anchor_weight: float = setting(0.1, check=non_negative, help="span_bt: weight of the anchor that pulls the "
                                                                 "unchanged tokens' rewards toward 0.")
    include_non_minimal: bool = setting(False, help="Train on edits the minimality guard flagged (meta.minimality "
                                                    "other than ok); by default they are left out, counted and named.")
    eval_data: list[str] = setting(reads="file", default_factory=list,
                                   help="Held-out edit pairs (file or data set name). "
                                        "Repeatable.")
    limit: int | None = setting(None, check=positive, help="Train on N usable pairs: the first N of a seeded "
                                                           "shuffle (nested subsets).")
    eval_limit: int | None = setting(None, check=positive, help="Evaluate on the first N held-out pairs.")
    # model
    lora: bool = setting(True, deprecated_off=("--full",), help="LoRA adapters; --no-lora: full fine-tuning.")
    top_layers: int = setting(0, check=non_negative, help="Train only the top N decoder layers (+ final norm, or "
                                                          "their LoRA); 0 = all.")
    lora_r: int = setting(16, check=positive, help="LoRA rank.")
    lora_alpha: int = setting(32, check=positive, help="LoRA alpha.")
    # optimisation
    steps: int = setting(100, deprecated=("--max-steps",), check=positive, help="Optimizer steps.")
    batch_size: int = setting(4, check=positive, help="Pairs per step per process.")
    learning_rate: float = setting(1e-4, flag="--lr", check=positive, help="Learning rate.")
    weight_decay: float = setting(0.0, check=non_negative, help="AdamW weight decay.")
    lr_schedule: str = setting("linear", choices=SCHEDULES, help="linear | constant | cosine.")
    warmup_steps: int = setting(0, check=non_negative, help="Linear warmup, in optimizer steps.")
    max_grad_norm: float = setting(1.0, check=non_negative, help="Gradient clipping norm (0: none).")
    max_length: int = setting(512, check=_at_least_16, help="Tokens per sequence; longer prompts lose their oldest "
                                                            "context.")
    gradient_checkpointing: bool | None = setting(None, identity=False,
                                                  help="Activation checkpointing: recompute each decoder layer "
                                                             "in the backward pass instead of keeping its activations "
                                                             "(far less memory, more compute; benchmarks/"
                                                             "train_memory.py). Default auto: on only when one batch's "
                                                             "activations would take over half the free memory.")
    # run
    seed: int = setting(0, help="Random seed (model head, subset, batch order).")
    eval_every: int = setting(50, identity=False, check=non_negative,
                              help="Evaluate every N steps (0: at the end only).")
    eval_batch_size: int = setting(8, identity=False, check=positive, help="Pairs per evaluation batch.")
    save_every: int = setting(50, identity=False, check=non_negative,
                              help="Steps between checkpoints (0: at the end only).")
    log_every: int = setting(10, identity=False, check=positive, help="Steps between logged training losses.")
    report_to: list[str] = setting(identity=False, default_factory=list,
                                   help="Trackers: tensorboard and/or wandb (space separated) or "
                                        "none.")
    stop_after: int | None = setting(None, identity=False, check=positive,
                                     help="Stop (as if interrupted) after N steps in this "
                                          "call; a rerun resumes.")

    def validate(self):
        if self.anchor_weight != 0.1 and self.loss != "span_bt":
            raise ConfigError("anchor_weight", f"only the span_bt loss has an anchor; loss {self.loss} would ignore it")
        self.report_to = [r for r in self.report_to if r and r != "none"]
        for r in self.report_to:
            if r not in REPORT_TO:
                raise ConfigError("report_to", f"{r!r} is not one of {', '.join(REPORT_TO)}")

    def run_settings(self) -> dict:
        """The settings as ``train_config.json`` and the checkpoint's fingerprint hold them: the field
        set and names of the first release (``steps`` as ``max_steps``; ``device`` only when not
        ``auto``), so a run started by an older finealign resumes."""
        d = {_OLD_NAMES.get(k, k): v for k, v in self.to_dict().items()}
        for k, default in _NEW_SETTINGS.items():
            if d.get(k) == default:
                d.pop(k)
        return d

    @classmethod
    def from_run_settings(cls, raw: dict) -> "TokenRMConfig":
        """The config of a ``train_config.json`` (any release's; unknown keys are ignored)."""
        names = {f for f in cls.__dataclass_fields__}
        new = {v: k for k, v in _OLD_NAMES.items()}
        return cls(**{new.get(k, k): v for k, v in raw.items() if new.get(k, k) in names})

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "TokenRMConfig":
        """Fields from a YAML file, then ``overrides`` (values that are None are ignored); an unknown
        field names the file and line."""
        return build_config(cls, path, **overrides)
