"""The settings of ``finealign sim study`` (:class:`SimStudyConfig`): one declaration from which the command's
flags, its recipe stage (``type: sim-study``, the verb table :mod:`finealign.verbs`) and the program
``python -m finealign.studies.sim_study`` (an argparse parser built from the fields) are derived.

A field left ``None`` takes the value of the preset (``--quick``, ``--fast``, ``--full`` or the default one):
:func:`resolve` fills them in (flags given explicitly win) and returns the namespace the study's stages read.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ..config import Settings, non_negative, positive, resolve_mixed_precision, setting, unit_interval
from ..errors import ConfigError, FinealignError
from ..sim import knobs_help
from ..train.ppo_config import ADVANTAGES

__all__ = ["DEFAULTS", "FAST", "FULL", "NOISE_NAMES", "PRESETS", "QUICK", "SOURCES", "SimStudyConfig", "build_parser",
           "preset_of", "resolve"]

SOURCES = ("span_bt", "span_bt_pure", "seq_bt", "token_cls", "dpo")
NOISE_NAMES = ("zero", "realistic")
PRESET_SOURCES = ["span_bt", "seq_bt", "token_cls", "dpo"]
TASKS = ("facts", "constraints", "arithmetic")
STAGES = ("data", "rm", "ppo")
# The default study fits about 2 hours on 2 CPU cores with the 135M model: one task (constraints: several wrong
# words per response, where token-level rewards have the most to say), all 4 reward sources at 25 and 100 pairs
# over 3 seeds, then PPO with the gold reward and with the DPO implicit reward (the one learned reward that located
# wrong words; the measured run also had span_bt, 601 s, which put it 3 minutes over: docs/sim.md). --full is the
# whole grid (days on this CPU; a GPU's job); --quick a smoke test of every stage (about 10 minutes), whose token RMs
# train the top 2 layers' full weights (about half the time of LoRA on every layer; its figures are not results).
# settings whose default differs between presets (the 135M presets: LoRA PPO with rloo at 5e-4; autocast auto: bf16
# only where it is measured faster, CUDA GPUs and AMX-BF16 CPUs; on an AVX2 CPU bf16 made a token-RM step 20x slower)
PPO_135M = dict(advantage="rloo", ppo_lora=True, mixed_precision="auto", lr=5e-4, ppo_epochs=2, jobs=1)
RM_PARAMS = dict(rm_lora=True, top_layers=0, rm_lr=5e-4)  # token RMs of the default and --full presets
DEFAULTS = dict(**RM_PARAMS, **PPO_135M, tasks=["constraints"], sizes=[25, 100], seeds=[0, 1, 2], sources=PRESET_SOURCES,
                noise=["zero"], n=40, heldout=16, k=4, max_new_tokens=24, rm_steps=24, ppo_steps=20, ppo_batch=8,
                group=4, eval_k=4, ppo_rewards=["gold", "dpo"], ppo_seeds=[0])
FULL = dict(**RM_PARAMS, **PPO_135M, tasks=list(TASKS), sizes=[25, 50, 100, 200, 400],
            seeds=[0, 1, 2], sources=PRESET_SOURCES, noise=["zero", "realistic"], n=240, heldout=60, k=4,
            max_new_tokens=48, rm_steps=60, ppo_steps=30, ppo_batch=8, group=4, eval_k=4,
            ppo_rewards=["gold", *PRESET_SOURCES], ppo_seeds=[0, 1, 2])
# --fast: the small task policies of `finealign sim policy` (a few million parameters, trained from scratch) stand in
# for the 135M model, so all three tasks x 5 PPO seeds x {token, sequence} fit about an hour on 2 cores (docs/sim.md
# has the measured time); the learned rewards train the policy's full weights (small enough) and PPO with them runs
# --learned-seeds seeds. Per-token leave-one-out advantages (prime), full fine-tuning, fp32 (no bf16 on most CPUs).
FAST = dict(tasks=list(TASKS), sizes=[50, 200], seeds=[0],
            sources=["span_bt", "token_cls", "seq_bt", "dpo"], noise=["zero"], n=96, heldout=32, k=4,
            max_new_tokens=32, rm_steps=100, rm_lora=False, top_layers=0, rm_lr=1e-3, ppo_steps=60, ppo_batch=32,
            group=4, eval_k=4, ppo_rewards=["gold", "span_bt", "token_cls", "seq_bt", "dpo"],
            ppo_seeds=[0, 1, 2, 3, 4], learned_seeds=[0], learned_tasks=["constraints", "arithmetic"],
            advantage="prime", ppo_lora=False, mixed_precision="no", lr=3e-4, ppo_epochs=1, jobs=2)
QUICK = dict(tasks=["facts"], sizes=[25, 50], seeds=[0], sources=PRESET_SOURCES, noise=["zero"], n=32, heldout=12,
             k=4, max_new_tokens=32, rm_steps=8, ppo_steps=4, ppo_batch=4, group=2, eval_k=1,
             ppo_rewards=["gold", "span_bt"], ppo_seeds=[0], rm_lora=False, top_layers=2, rm_lr=2e-4, **PPO_135M)
PRESETS = {"quick": QUICK, "fast": FAST, "full": FULL, "default": DEFAULTS}


def preset_text(preset: dict) -> str:
    """What a preset sets, for its flag's help: ``--tasks facts --sizes 25 50 ... --no-rm-lora``."""
    def flag(k: str, v) -> str:
        name = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            return name if v else "--no-" + k.replace("_", "-")
        return f"{name} {' '.join(map(str, v)) if isinstance(v, list) else v}"

    return " ".join(flag(k, v) for k, v in preset.items())


def _each_positive(v) -> str | None:
    return next((f"every value must be positive, got {x}" for x in v if x <= 0), None)


def _task_option(v) -> str | None:
    return next((f"{x}: expected TASK:K=V,... (e.g. facts:slots=2)" for x in v if ":" not in x), None)


@dataclass(kw_only=True)
class SimStudyConfig(Settings):
    """Token vs sequence supervision against the gold reward: reward models from oracle edits, PPO curves, steps
    to target (presets --fast, --quick, --full). Rerun to resume."""

    out: str = setting(None, identity=False, required=True, metavar="DIR",
                       help="The study's folder (data, reward models, PPO runs, study.json); a rerun resumes it.")
    quick: bool = setting(False, help="The smoke-test preset (flags given explicitly still win): "
                                      + preset_text(QUICK) + ".")
    fast: bool = setting(False, help="The small task policies (`finealign sim policy`, built under --policies when "
                                     "missing): 3 tasks x 5 seeds x {token, sequence}, gold and 4 learned rewards, "
                                     "60 PPO steps x 32: " + preset_text(FAST) + ".")
    full: bool = setting(False, help="The whole grid: 3 tasks, 5 sizes, 2 noise settings, 5 PPO rewards (days on "
                                     "2 CPU cores): " + preset_text(FULL) + ". Without a preset: "
                                     + preset_text(DEFAULTS) + ".")
    model: str = setting("smollm2-135m-instruct", help="Backbone of the reward models and the policy.")
    policies: str | None = setting(None, metavar="DIR",
                                   help="A folder of `finealign sim policy` models, one per task (DIR/TASK; missing "
                                        "ones are built): each task's policy and reward-model backbone instead of "
                                        "--model (--fast: OUT/policies).")
    policy_size: str = setting("small", choices=("small", "tiny"),
                               help="Size preset of the policies --policies builds (`finealign sim policy --size`; "
                                    "tiny: tests).")
    jobs: int | None = setting(None, identity=False, check=positive,
                               help="Independent trainings run in this many processes of 1 thread each (default 1; "
                                    "--fast 2).")
    tasks: list[str] | None = setting(None, choices=TASKS, metavar="TASK...",
                                      help="Simulated tasks: facts, constraints, arithmetic (default: constraints; "
                                           "--quick: facts; --full and --fast: all three).")
    task_options: list[str] = setting(default_factory=list, metavar="TASK:K=V,...", check=_task_option,
                                      help="Difficulty knobs per task, several per task comma-separated, e.g. "
                                           "constraints:letter=false,banned=6. Knobs and defaults: "
                                           + knobs_help() + ".")
    sizes: list[int] | None = setting(None, check=_each_positive, metavar="N...",
                                      help="Numbers of annotated edit pairs each reward source trains on (nested "
                                           "subsets; default 25 100).")
    seeds: list[int] | None = setting(None, metavar="SEED...",
                                      help="Reward-model seeds: subset, annotator noise, training (default 0 1 2).")
    sources: list[str] | None = setting(None, choices=SOURCES, metavar="SOURCE...",
                                        help="Token RM losses span_bt (anchored), span_bt_pure (the paper's), seq_bt, "
                                             "token_cls; dpo: a DPO policy read as the dpo-implicit token scorer "
                                             "(default: span_bt, seq_bt, token_cls, dpo).")
    noise: list[str] | None = setting(None, choices=NOISE_NAMES, metavar="NOISE...",
                                      help="Simulated annotator: zero (a perfect oracle) or realistic (misses, "
                                           "over-edits, flips).")
    n: int | None = setting(None, check=positive, help="Training prompts per task (default 40).")
    heldout: int | None = setting(None, check=positive, help="Held-out prompts per task (default 16).")
    k: int | None = setting(None, check=positive, help="Policy samples per prompt (default 4).")
    max_new_tokens: int | None = setting(None, check=positive,
                                         help="Longest policy sample and PPO rollout (default 24).")
    rm_steps: int | None = setting(None, check=positive,
                                   help="Optimizer steps of every reward model and DPO policy (default 24).")
    rm_batch: int = setting(8, check=positive, help="Edit pairs per reward-model step.")
    rm_lr: float | None = setting(None, check=positive, help="Token RMs' learning rate (default 5e-4; --quick 2e-4).")
    rm_lora: bool | None = setting(None, help="Token RMs train LoRA adapters (r 16) on every layer, like the DPO "
                                              "source; --no-rm-lora trains full weights of the top --top-layers "
                                              "layers (docs/sim.md compares the two).")
    top_layers: int | None = setting(None, check=non_negative,
                                     help="Token RMs train only the top N layers (0: all; --quick: 2).")
    rm_pool: str = setting("sum", choices=("sum", "mean"),
                           help="How a token RM's per-token rewards make a response's score (ranking, sequence-level "
                                "PPO); mean takes the length out of the sum (evaluated apart, in "
                                "sim_eval_pool-mean.json).")
    rm_curve: list[int] = setting(default_factory=list, metavar="STEP...",
                                  help="Also measure every token RM on the held-out sets after these optimizer steps "
                                       "of its training (a learning curve, each step below --rm-steps; the last "
                                       "point is --rm-steps itself). Not for dpo.")
    dpo_beta: float = setting(0.1, check=positive, help="DPO's beta, also the implicit reward's scale.")
    dpo_lr: float = setting(1e-4, check=positive, help="DPO policy's learning rate (LoRA).")
    eval_limit: int = setting(200, check=positive,
                              help="Most records read from each held-out set (sample pairs, oracle edits, rated "
                                   "samples).")
    ppo_rewards: list[str] | None = setting(None, choices=("gold", *SOURCES), metavar="REWARD...",
                                            help="PPO rewards: gold (sim:TASK, the upper bound) and learned sources "
                                                 "(seed 0, largest size; default gold dpo).")
    ppo_seeds: list[int] | None = setting(None, metavar="SEED...", help="PPO seeds (default 0).")
    ppo_steps: int | None = setting(None, check=positive, help="PPO steps per run (default 20).")
    ppo_batch: int | None = setting(None, check=positive, help="Rollouts per PPO step (default 8).")
    ppo_noise: str = setting("zero", choices=NOISE_NAMES, help="The annotator noise of the learned rewards PPO uses.")
    granularities: list[str] = setting(default_factory=lambda: ["token", "sequence"], choices=("token", "sequence"),
                                       metavar="GRANULARITY...",
                                       help="Where PPO's reward lands: on every token (token) or all on the stop "
                                            "token (sequence).")
    lr: float | None = setting(None, check=positive,
                               help="PPO learning rate (default 5e-4, LoRA: 1e-4 did not move the 135M policy in 20 "
                                    "steps, 2e-3 collapsed it; --fast 3e-4, full weights of the small policies).")
    kl_coef: float = setting(0.05, check=non_negative, help="PPO's KL penalty to the initial policy, per token.")
    advantage: str | None = setting(None, choices=tuple(ADVANTAGES),
                                    help="PPO advantages: rloo (no critic, one baseline per response), prime (no "
                                         "critic, per-token leave-one-out baseline), reinforce++ (no critic, "
                                         "batch-normalised) or gae (a critic); rloo and prime take --group responses "
                                         "per prompt (default rloo; --fast prime).")
    group: int | None = setting(None, check=positive,
                                help="Rollouts per prompt (each step: ppo-batch / group prompts).")
    value_model: str = setting("shared", choices=("shared", "separate"), help="PPO critic.")
    critic_lr: float = setting(1e-3, check=positive, help="The critic's own learning rate (gae).")
    critic_warmup: int = setting(0, check=non_negative, help="gae: steps that train the critic alone first.")
    ppo_lora: bool | None = setting(None, help="LoRA policy (default; --no-ppo-lora: full fine-tuning, --fast's for "
                                               "the small `sim policy` models).")
    vf_coef: float = setting(0.05, check=non_negative,
                             help="Value loss weight (train ppo's 0.5 lets a shared value head's loss swamp the "
                                  "policy gradient under clipping: grad norm ~10 from the value loss vs ~1).")
    temperature: float = setting(1.0, check=positive, help="PPO rollout temperature.")
    ppo_epochs: int | None = setting(None, check=positive,
                                     help="PPO epochs per rollout batch (default 2; --fast 1).")
    learned_tasks: list[str] | None = setting(None, choices=TASKS, metavar="TASK...",
                                              help="Tasks whose learned rewards are trained and used by PPO (default: "
                                                   "--tasks; --fast: constraints arithmetic: the facts policy answers "
                                                   "93% of its samples right, leaving 26 oracle edits).")
    learned_seeds: list[int] | None = setting(None, metavar="SEED...",
                                              help="PPO seeds of the learned rewards (default: --ppo-seeds; --fast 0).")
    target_frac: float = setting(0.5, check=unit_interval,
                                 help="Steps to target: the fraction of the gap from the initial policy to the gold "
                                      "run's final gold.")
    eval_k: int | None = setting(None, check=positive,
                                 help="Samples per prompt when the initial and every final PPO policy are scored by "
                                      "the gold reward.")
    mixed_precision: str | None = setting(None, choices=("auto", "no", "bf16"),
                                          help="Autocast of the token RMs and PPO (default auto: bf16 on CUDA GPUs "
                                               "with bf16 and AMX-BF16 CPUs, where it was measured faster, else no; "
                                               "--fast no).")
    data_seed: int = setting(0, help="Seed of the prompts and policy samples.")
    stages: list[str] = setting(default_factory=lambda: list(STAGES), choices=STAGES, metavar="STAGE...",
                                help="Run only these stages (rm needs data, ppo with a learned reward needs rm).")
    json: str | None = setting(None, identity=False, metavar="FILE", help="Also write the study JSON here.")
    png_prefix: str | None = setting(None, identity=False, metavar="PREFIX",
                                     help="Write PREFIX_rm.png and PREFIX_ppo.png (and PREFIX_rm_curve.png with "
                                          "--rm-curve).")

    def validate(self):
        chosen = [p for p in ("quick", "fast", "full") if getattr(self, p)]
        if len(chosen) > 1:
            raise ConfigError(chosen[1], f"{chosen[0]} and {chosen[1]} are both presets: choose one")
        for f in dataclasses.fields(self):
            empty_ok = f.name in ("task_options", "rm_curve")
            if isinstance(getattr(self, f.name), list) and not getattr(self, f.name) and not empty_ok:
                raise ConfigError(f.name, "give at least one value (or leave it out for the preset's)")
        merged = _merged(self)
        _check_together(merged)  # what the preset and the given settings make together
        extra = [t for t in (self.learned_tasks or []) if t not in merged.tasks]  # given ones (a preset's are cut)
        if extra:
            raise ConfigError("learned_tasks", f"{' '.join(extra)} not among tasks ({' '.join(merged.tasks)})")


def preset_of(cfg: SimStudyConfig) -> str:
    """``quick``, ``fast``, ``full`` or ``default``."""
    return next((p for p in ("quick", "fast", "full") if getattr(cfg, p)), "default")


def _merged(cfg: SimStudyConfig) -> SimpleNamespace:
    """``cfg``'s fields with every ``None`` taken from its preset (no other change)."""
    a = SimpleNamespace(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    for k, v in PRESETS[preset_of(cfg)].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.task_options = list(a.task_options or [])
    return a


def resolve(cfg: SimStudyConfig) -> SimpleNamespace:
    """The settings the study's stages read: ``cfg`` with every ``None`` field taken from its preset, paths as
    ``Path``, ``opts`` ({task: options}), ``learned_seeds`` / ``learned_tasks`` defaulted from the PPO seeds and
    tasks. Raises ``FinealignError`` (one line) for settings that cannot run together."""
    a = _merged(cfg)
    _check_together(a)
    a.out = Path(a.out)
    a.policies = Path(a.policies) if a.policies else None
    a.json = Path(a.json) if a.json else None
    a.opts = dict(x.split(":", 1) for x in a.task_options)
    a.mixed_precision = resolve_mixed_precision(a.mixed_precision)  # study.json records the autocast that ran
    if a.fast and a.policies is None:
        a.policies = a.out / "policies"
    a.learned_seeds = a.learned_seeds if a.learned_seeds is not None else a.ppo_seeds
    a.learned_tasks = [t for t in (a.learned_tasks if a.learned_tasks is not None else a.tasks) if t in a.tasks]
    return a


def _check_together(a) -> None:
    """Settings that cannot run together (``a``: merged with the preset), refused before any work, in the
    command, the recipe's plan and the program alike. Raises ``ConfigError`` naming the field."""
    _check_task_options(a.task_options, a.tasks)
    _check_sizes(a)
    bad = [s for s in a.rm_curve if not 0 < s < a.rm_steps]
    if bad:
        raise ConfigError("rm_curve", f"{' '.join(map(str, bad))}: each step must lie between 1 and rm_steps - 1 "
                                      f"({a.rm_steps - 1}); the curve's last point is rm_steps itself")


def _check_task_options(options: list[str], tasks: list[str]) -> None:
    """Each ``task_options`` entry is ``TASK:K=V,...`` for a task of ``tasks``, with knobs the task has; raises
    ``ConfigError``."""
    from ..sim import make_task

    for x in options:
        if ":" not in x:
            raise ConfigError("task_options", f"{x}: expected TASK:K=V,... (e.g. facts:slots=2)")
        task, opts = x.split(":", 1)
        if task not in tasks:
            raise ConfigError("task_options", f"{x}: {task} is not one of tasks ({' '.join(tasks)}); add it to "
                                              "tasks or drop the option")
        try:
            make_task(task, opts)
        except FinealignError as e:
            raise ConfigError("task_options", f"{x}: {e}") from None


def _check_sizes(a) -> None:
    """Settings that cannot run together, refused before any work (one line: FinealignError)."""
    if "ppo" not in a.stages:
        return
    if a.group < 1 or a.ppo_batch % a.group or (a.advantage in ("rloo", "prime") and a.group < 2):
        raise ConfigError("group", f"{a.group} must divide ppo_batch {a.ppo_batch}"
                          + (f" and be >= 2 for advantage {a.advantage}" if a.advantage in ("rloo", "prime") else ""))
    if a.n < a.ppo_batch // a.group:
        raise ConfigError("n", f"{a.n} training prompts are fewer than one PPO step draws (ppo_batch "
                               f"{a.ppo_batch} / group {a.group} = {a.ppo_batch // a.group} prompts)")


def build_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of ``python -m finealign.studies.sim_study``, one flag per field of
    :class:`SimStudyConfig` (lists take several values: ``--tasks facts arithmetic``; the presets exclude each
    other). Values are checked by the dataclass afterwards, not here (one error style)."""
    p = argparse.ArgumentParser(prog=prog or "python -m finealign.studies.sim_study", description=description)
    presets = p.add_mutually_exclusive_group()
    hints = typing.get_type_hints(SimStudyConfig)
    for f in dataclasses.fields(SimStudyConfig):
        meta, hint = f.metadata, hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        text = meta["help"] + (f" One of: {', '.join(map(str, meta['choices']))}." if meta.get("choices") else "")
        kw = dict(help=text.replace("%", "%%"), default=None, dest=f.name, required=bool(meta.get("required")))
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if args and typing.get_origin(hint) is not list else hint
        if typing.get_origin(base) is list:
            elem = typing.get_args(base)[0]
            kw.update(nargs="*" if f.name == "task_options" else "+", type=elem, metavar=_metavar(meta))
        elif f.name in ("quick", "fast", "full"):
            presets.add_argument(flag, action="store_true", default=None, dest=f.name, help=kw["help"])
            continue
        elif base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(type=base, metavar=meta.get("metavar") or None)
        p.add_argument(flag, **kw)
    return p


def _metavar(meta) -> str | None:
    m = meta.get("metavar")
    return m.rstrip(".") if m else None


def parse_study_args(argv=None, prog: str | None = None, description: str | None = None) -> SimStudyConfig:
    """:class:`SimStudyConfig` from ``argv`` (flags not given keep their defaults); exits (argparse) on an unknown
    flag or a value of the wrong type, raises ``ConfigError`` for a value its check refuses."""
    ns = build_parser(prog, description).parse_args(argv)
    return SimStudyConfig(**{k: v for k, v in vars(ns).items() if v is not None})
