"""Configuration of fine-grained PPO: one dataclass on :mod:`finealign.config`, with a YAML overlay.

Defaults follow FineGrainedRLHF (gamma 1, lambda 0.95, clip 0.2, 4 PPO epochs, whitened advantages)
with a LoRA policy whose reference is the same model with the adapters off; the KL coefficient is
smaller than FineGrainedRLHF's 0.3 and closer to AlpacaFarm's (0.0067-0.02 with a sequence reward
on another scale), because our per-token KL is summed over the response. Every field is a flag of
``finealign train ppo`` (generated from this class) and a key of its ``--config`` YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, build_config, dump_yaml as _dump_yaml, load_yaml_settings, non_negative, \
    AUTO_MIXED_PRECISION_HELP, normalize_dtype, positive, resolve_mixed_precision, setting, unit_interval
from ..errors import ConfigError
from .result import REPORT_TO, SCHEDULES

GRANULARITIES = ("token", "sequence")
VALUE_MODELS = ("shared", "separate")
OLD_LOGPROBS = ("generation", "recompute")
MIXED_PRECISIONS = ("auto", "no", "bf16")
KL_ESTIMATORS = ("k1", "k3")
ADVANTAGES = ("gae", "rloo", "prime", "reinforce++")
CRITIC_FREE = ("rloo", "prime", "reinforce++")


@dataclass(kw_only=True)
class PPOConfig(Settings):
    """Everything a PPO run needs; saved as ``config.yaml`` in the output folder."""

    # what
    model: str = setting("smollm2-135m-instruct", reads="model", short="-m", deprecated=("--policy",),
                         help="The policy to train: model spec (built-in name, .gguf, directory, hub id).")
    reward: str = setting("length", reads="scorer", help="Scorer spec, e.g. token-rm:runs/rm, flr:MODEL, length; a token scorer "
                                         "gives per-token rewards.")
    prompts: str = setting(None, reads="file", short="-p", required=True, help="Prompt-bearing file (JSONL/JSON/CSV/Parquet).")
    out: str = setting(None, identity=False, short="-o", required=True,
                       help="Output folder (checkpoint, metrics.jsonl, samples.jsonl, policy/); a rerun resumes.")
    granularity: str = setting("token", choices=GRANULARITIES,
                               help="token: reward on every token | sequence: summed onto the last token.")
    reference: str | None = setting(None, reads="model", help="Separate reference model spec; unset: LoRA adapters off "
                                               "(or a frozen copy).")
    # model
    lora: bool = setting(True, help="LoRA policy (reference = adapters off); --no-lora: full fine-tuning.")
    lora_r: int = setting(16, help="LoRA rank.", check=positive)
    lora_alpha: int = setting(32, help="LoRA alpha.", check=positive)
    value_model: str = setting("shared", choices=VALUE_MODELS,
                               help="shared: value head on the policy's last hidden state | separate: own critic.")
    dtype: str = setting("float32", help="Weights' dtype: float32 | bfloat16 | float16.")
    mixed_precision: str = setting("auto", choices=MIXED_PRECISIONS,
                                   help="auto | no | bf16: autocast in every phase (" + AUTO_MIXED_PRECISION_HELP
                                        + ").")
    device: str = setting("auto", identity=False, choices=("auto", "cpu", "cuda"), help="auto | cpu | cuda.")
    # rollout
    steps: int = setting(100, identity="grows", help="PPO steps (one rollout batch each).", check=positive)
    batch_size: int = setting(8, help="Rollouts per step per process.", check=positive)
    max_prompt_length: int = setting(256, help="Prompt tokens at most; longer prompts lose their beginning (counted).",
                                     check=positive)
    max_new_tokens: int = setting(64, help="Tokens per rollout at most.", check=positive)
    temperature: float = setting(1.0, help="Sampling temperature of rollouts.", check=positive)
    ignore_eos: bool = setting(False, help="Always generate max_new_tokens (benchmarks: fixed lengths).")
    old_logprobs: str = setting("generation", choices=OLD_LOGPROBS,
                                help="generation: pi_old from the sampling pass | recompute: a forward pass after it.")
    # reward
    alpha: float = setting(1.0, help="Scale of the reward model's rewards.", check=non_negative)
    kl_coef: float = setting(0.05, help="beta, the KL penalty coefficient (initial value when adaptive).",
                             check=non_negative)
    kl_estimator: str = setting("k1", choices=KL_ESTIMATORS, help="Per-token KL estimator: k1 | k3.")
    kl_target: float | None = setting(None, help="Adaptive KL target per sequence (Ziegler et al.); unset: fixed "
                                                 "coefficient.", check=positive)
    kl_horizon: int = setting(10000, help="Horizon of the adaptive KL controller.", check=positive)
    whiten_rewards: bool = setting(False, help="Scale rewards by their std (AlpacaFarm).")
    # advantages and losses
    advantage: str = setting("gae", choices=ADVANTAGES,
                             help="gae: a critic's values | rloo: no critic, each token's reward-to-go minus the mean "
                                  "return of the prompt's other responses (one baseline per response) | prime: no "
                                  "critic, a per-token leave-one-out baseline (PRIME: the stop token's reward against "
                                  "the others', the other tokens' rewards against the others' mean per token) | "
                                  "reinforce++: no critic, rewards-to-go normalised over the batch. rloo and prime "
                                  "need --rollouts-per-prompt >= 2.")
    rollouts_per_prompt: int = setting(1, help="K: responses sampled per prompt; each step takes batch_size / K "
                                               "prompts (K must divide --batch-size; rloo needs K >= 2).",
                                       check=positive)
    gamma: float = setting(1.0, help="Discount.", check=unit_interval)
    lam: float = setting(0.95, help="GAE lambda.", check=unit_interval)
    whiten_advantages: bool = setting(True, help="Whiten advantages per batch.")
    clip: float = setting(0.2, help="Policy ratio clip.", check=positive)
    clip_value: float = setting(0.0, help="Value clip: each update moves a value at most this far from the rollout's "
                                          "(on the returns' scale); 0: no clipping (a fresh critic can reach the "
                                          "returns' scale at once).", check=non_negative)
    vf_coef: float = setting(0.5, help="Value loss coefficient.", check=non_negative)
    critic_lr: float = setting(1e-3, help="Learning rate of the critic (the value head, and the separate critic's "
                                          "weights): its own parameter group, so a zero-initialised head reaches the "
                                          "returns' scale within a short run.", check=positive)
    critic_warmup: int = setting(0, help="gae: the first N steps train the critic only (policy frozen). Every gae run "
                                         "starts its value head at 0 with its bias at the first batch's mean return.",
                                 check=non_negative)
    ent_coef: float = setting(0.0, help="Entropy bonus coefficient.", check=non_negative)
    # optimisation
    ppo_epochs: int = setting(4, help="Epochs over each rollout batch.", check=positive)
    minibatch_size: int = setting(4, help="Rows per optimizer step.", check=positive)
    micro_batch_size: int = setting(4, help="Rows per forward/backward (accumulated within a minibatch).",
                                    check=positive)
    gradient_checkpointing: bool | None = setting(None, identity=False,
                                                  help="Activation checkpointing of the policy (and critic) in "
                                                             "the PPO updates: recompute each decoder layer in the "
                                                             "backward pass (far less memory, about twice the update's "
                                                             "compute; rollouts unaffected). Default auto: on only when "
                                                             "one micro-batch's activations would take over half the "
                                                             "device's free memory.")
    learning_rate: float = setting(5e-5, flag="--lr", help="Learning rate.", check=positive)
    lr_schedule: str = setting("constant", choices=SCHEDULES, help="constant | linear | cosine.")
    warmup_steps: int = setting(0, help="Linear warmup, in optimizer steps.", check=non_negative)
    weight_decay: float = setting(0.0, help="AdamW weight decay.", check=non_negative)
    max_grad_norm: float = setting(1.0, help="Gradient clipping norm.", check=positive)
    # run
    seed: int = setting(0, help="Random seed (same seed = same prompts and first rollouts).")
    save_every: int = setting(10, identity=False, help="Steps between checkpoints (and at the end).", check=positive)
    log_samples_every: int = setting(10, identity=False,
                                     help="Steps between logged sample generations.", check=positive)
    report_to: list[str] = setting(identity=False, default_factory=list,
                                   help="Trackers: tensorboard and/or wandb (space separated).")

    def validate(self):
        self.dtype = normalize_dtype(self.dtype)
        self.report_to = [r for r in self.report_to if r and r != "none"]
        for r in self.report_to:
            if r not in REPORT_TO:
                raise ConfigError("report_to", f"{r!r} is not one of {', '.join(REPORT_TO)}")
        if self.batch_size % self.rollouts_per_prompt:
            raise ConfigError("rollouts_per_prompt",
                              f"{self.rollouts_per_prompt} does not divide batch_size {self.batch_size}")
        if self.advantage in ("rloo", "prime") and self.rollouts_per_prompt < 2:
            raise ConfigError("rollouts_per_prompt", f"advantage {self.advantage} needs 2 or more responses per prompt: "
                                                     "set --rollouts-per-prompt K (K >= 2, dividing --batch-size)")
        if self.critic_warmup >= self.steps:
            raise ConfigError("critic_warmup", f"{self.critic_warmup} warm-up steps leave none of the {self.steps} "
                                               "--steps to train the policy; use fewer than --steps")
        if self.critic_warmup and self.advantage != "gae":
            raise ConfigError("critic_warmup", f"advantage {self.advantage} has no critic to warm up; use --advantage gae")
        # last: resolving "auto" may import torch, and every check above needs none
        self.mixed_precision = resolve_mixed_precision(self.mixed_precision, self.device)
        if self.batch_size % self.minibatch_size:
            raise ConfigError("minibatch_size", f"{self.minibatch_size} does not divide batch_size {self.batch_size}")
        if self.minibatch_size % self.micro_batch_size:
            raise ConfigError("micro_batch_size",
                              f"{self.micro_batch_size} does not divide minibatch_size {self.minibatch_size}")

    # ------------------------------------------------------------------ YAML

    @classmethod
    def from_overrides(cls, yaml_path: str | Path | None = None, **overrides) -> "PPOConfig":
        """Defaults < YAML file < ``overrides`` (keys whose value is None are left out)."""
        return build_config(cls, yaml_path, **overrides)

    @property
    def policy(self) -> str:
        """The policy model spec, ``model`` (the setting's name before ``--policy`` became ``--model``)."""
        return self.model


def load_yaml(path: str | Path) -> dict:
    """The PPOConfig fields of a YAML file (unknown fields: ConfigError naming file and line)."""
    return {k: v for k, (v, _) in load_yaml_settings(path, PPOConfig).items()}


def dump_yaml(cfg: PPOConfig) -> str:
    return _dump_yaml(cfg)
