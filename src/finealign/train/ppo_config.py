"""Configuration of fine-grained PPO: one dataclass, validated in ``__post_init__``, with a YAML overlay.

Defaults follow FineGrainedRLHF (gamma 1, lambda 0.95, clip 0.2, 4 PPO epochs, whitened advantages)
with a LoRA policy whose reference is the same model with the adapters off; the KL coefficient is
smaller than FineGrainedRLHF's 0.3 and closer to AlpacaFarm's (0.0067-0.02 with a sequence reward
on another scale), because our per-token KL is summed over the response.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FinealignError

GRANULARITIES = ("token", "sequence")
VALUE_MODELS = ("shared", "separate")
OLD_LOGPROBS = ("generation", "recompute")
MIXED_PRECISIONS = ("no", "bf16")
SCHEDULES = ("constant", "linear", "cosine")
REPORT_TO = ("tensorboard", "wandb")


@dataclass
class PPOConfig:
    """Everything a PPO run needs; saved as ``config.yaml`` in the output folder."""

    # what
    policy: str = "smollm2-135m-instruct"  # model spec (built-in name, .gguf, directory, hub id)
    reward: str = "length"  # scorer spec; a TokenScorer gives per-token rewards
    prompts: str = ""  # any prompt-bearing file (JSONL/JSON/CSV/Parquet)
    out: str = ""  # output folder (checkpoint, metrics.jsonl, samples.jsonl, policy/)
    granularity: str = "token"  # token: reward on every token; sequence: summed onto the last token
    reference: str | None = None  # separate reference model spec; None: LoRA adapters off (or a frozen copy)
    # model
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    value_model: str = "shared"  # shared: value head on the policy's last hidden state; separate: own critic
    dtype: str = "float32"
    mixed_precision: str = "no"  # no | bf16: autocast for rollouts and updates (weights stay in dtype)
    device: str = "auto"
    # rollout
    steps: int = 100  # PPO steps (one rollout batch each)
    batch_size: int = 8  # rollouts per step per process
    max_prompt_length: int = 256  # longer prompts lose their beginning (counted)
    max_new_tokens: int = 64
    temperature: float = 1.0
    ignore_eos: bool = False  # always generate max_new_tokens (benchmarks: fixed lengths)
    old_logprobs: str = "generation"  # generation: pi_old from the sampling pass; recompute: a forward pass after it
    # reward
    alpha: float = 1.0  # scale of the reward model's rewards
    kl_coef: float = 0.05  # beta
    kl_estimator: str = "k1"
    kl_target: float | None = None  # adaptive KL when set (Ziegler et al.), per-sequence KL
    kl_horizon: int = 10000
    whiten_rewards: bool = False  # AlpacaFarm scales rewards (std only)
    # advantages and losses
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    clip: float = 0.2
    clip_value: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    # optimisation
    ppo_epochs: int = 4
    minibatch_size: int = 4  # rows per optimizer step
    micro_batch_size: int = 4  # rows per forward/backward (gradient accumulation within a minibatch)
    learning_rate: float = 5e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 0  # optimizer steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # run
    seed: int = 0
    save_every: int = 10  # steps between checkpoints (and at the end)
    log_samples_every: int = 10  # steps between logged sample generations
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self):
        def bad(name, problem):
            raise FinealignError(f"ppo config: {name}: {problem}")

        if self.granularity not in GRANULARITIES:
            bad("granularity", f"{self.granularity!r} is not one of {', '.join(GRANULARITIES)}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            bad("mixed_precision", f"{self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISIONS)}")
        if self.old_logprobs not in OLD_LOGPROBS:
            bad("old_logprobs", f"{self.old_logprobs!r} is not one of {', '.join(OLD_LOGPROBS)}")
        if self.value_model not in VALUE_MODELS:
            bad("value_model", f"{self.value_model!r} is not one of {', '.join(VALUE_MODELS)}")
        if self.lr_schedule not in SCHEDULES:
            bad("lr_schedule", f"{self.lr_schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.kl_estimator not in ("k1", "k3"):
            bad("kl_estimator", f"{self.kl_estimator!r} is not k1 or k3")
        if isinstance(self.report_to, str):
            self.report_to = [s for s in self.report_to.split(",") if s.strip() and s.strip() != "none"]
        for r in self.report_to:
            if r not in REPORT_TO:
                bad("report_to", f"{r!r} is not one of {', '.join(REPORT_TO)}")
        for name in ("steps", "batch_size", "max_new_tokens", "max_prompt_length", "ppo_epochs", "minibatch_size",
                     "micro_batch_size", "save_every", "log_samples_every", "lora_r", "kl_horizon"):
            if int(getattr(self, name)) <= 0:
                bad(name, f"must be positive, got {getattr(self, name)}")
        if self.batch_size % self.minibatch_size:
            bad("minibatch_size", f"{self.minibatch_size} does not divide batch_size {self.batch_size}")
        if self.minibatch_size % self.micro_batch_size:
            bad("micro_batch_size", f"{self.micro_batch_size} does not divide minibatch_size {self.minibatch_size}")
        if self.temperature <= 0:
            bad("temperature", "must be positive")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            bad("gamma/lam", "must lie in [0, 1]")
        for name in ("clip", "clip_value", "learning_rate", "max_grad_norm"):
            if getattr(self, name) <= 0:
                bad(name, f"must be positive, got {getattr(self, name)}")
        for name in ("kl_coef", "vf_coef", "ent_coef", "weight_decay", "alpha"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if self.kl_target is not None and self.kl_target <= 0:
            bad("kl_target", "must be positive (or unset for a fixed coefficient)")

    # ------------------------------------------------------------------ YAML

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_overrides(cls, yaml_path: str | Path | None = None, **overrides) -> "PPOConfig":
        """Defaults < YAML file < ``overrides`` (keys whose value is None are left out)."""
        values: dict = {}
        if yaml_path:
            values.update(load_yaml(yaml_path))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise FinealignError(f"{path}: cannot read config: {e}") from e
    except yaml.YAMLError as e:
        raise FinealignError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise FinealignError(f"{path}: expected a mapping of PPOConfig fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(PPOConfig)}
    for k in data:
        if k not in known:
            raise FinealignError(f"{path}: {k}: not a PPOConfig field (known: {', '.join(sorted(known))})")
    return data


def dump_yaml(cfg: PPOConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
