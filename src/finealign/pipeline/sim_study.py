"""Token-level vs sequence-level supervision, measured against a gold reward on the simulated tasks.

Stages (each resumable: finished pieces are skipped on rerun, interrupted trainings resume):

1. data: ``finealign sim make`` per task (prompts, k policy samples, held-out sets) under OUT/data/TASK;
2. reward models: for each task, annotator noise setting, seed and size N, the same seeded, nested
   subset of N annotated edit pairs trains every source: token RMs with the ``span_bt``, ``seq_bt``
   and ``token_cls`` losses (``train.token_rm``), and a DPO policy (``train.preference``, LoRA) read as
   the token scorer ``dpo-implicit``; each is measured on the held-out sets (``sim.evaluate``):
   pairwise accuracy against the gold preference (sample pairs, and oracle edits) and token AUROC
   against the gold wrong spans;
3. PPO (``train.ppo``): token vs sequence granularity with the gold reward ``sim:TASK`` and with each
   learned reward (trained on the largest size, noise ``--ppo-noise``, seed 0), ``--ppo-seeds`` seeds;
   the gold score of every rollout batch is logged beside the proxy score and KL. Reported: gold
   curves; steps to reach ``--target-frac`` of the gap between the initial policy (the first batch) and the
   best gold-reward run's final value (mean of the last 3 steps; 3-step moving average, from step 2 on; a run
   that ends below the target has not reached it);
   the final KL; an over-optimisation flag (proxy up, gold down between the first and last third of the
   run); and the gold score of the initial and every final policy (``--eval-k`` samples per prompt).

Writes OUT/study.json (and ``--json``), plots with ``--png-prefix`` (``PREFIX_rm.png``, ``PREFIX_ppo.png``).

    python -m finealign.pipeline.sim_study --out runs/sim_study --json docs/sim_study.json --png-prefix docs/sim_study
    python -m finealign.pipeline.sim_study --quick --out runs/sim_quick          # < 15 min on 2 cores (135M)
    python -m finealign.pipeline.sim_study --quick --model tiny-random --out /tmp/q --n 10 ...   # CI smoke

``python benchmarks/sim_study.py ARGS`` (in a clone) is the same program. Python: ``main(["--quick", "--out", "q"])`` returns
the study's dict (what OUT/study.json holds). Bad input raises :class:`finealign.errors.FinealignError`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

from ..data.io import JsonlAppender, iter_objects, to_json, write_json, write_jsonl
from ..train.ppo_config import ADVANTAGES
from ..errors import FinealignError
from ..rewards.base import TokenScorer, load_scorer
from ..sim import make_task
from ..sim.annotator import REALISTIC, Noise
from ..sim.evaluate import evaluate_reward
from ..sim.make import SimMakeConfig, derive, edits_as_pairs, make_sim, read_samples
from .sim_plots import moving, plot

NOISE = {"zero": Noise(), "realistic": REALISTIC}
SOURCES = ("span_bt", "span_bt_pure", "seq_bt", "token_cls", "dpo")
PRESET_SOURCES = ["span_bt", "seq_bt", "token_cls", "dpo"]
# The default study fits about 2 hours on 2 CPU cores with the 135M model: one task (constraints: several wrong
# words per response, where token-level rewards have the most to say), all 4 reward sources at 25 and 100 pairs
# over 3 seeds, then PPO with the gold reward and with the DPO implicit reward (the one learned reward that located
# wrong words; the measured run also had span_bt, 601 s, which put it 3 minutes over: docs/sim.md). --full is the whole grid (days on
# this CPU; a GPU's job); --quick a smoke test of every stage (about 10 minutes), whose token RMs train the top 2
# layers' full weights (about half the time of LoRA on every layer; its figures are not results).
RM_PARAMS = dict(rm_lora=True, top_layers=0, rm_lr=5e-4)  # token RMs of the default and --full presets
DEFAULTS = dict(**RM_PARAMS, tasks=["constraints"], sizes=[25, 100], seeds=[0, 1, 2], sources=PRESET_SOURCES,
                noise=["zero"], n=40, heldout=16, k=4, max_new_tokens=24, rm_steps=24, ppo_steps=20, ppo_batch=8,
                group=4, eval_k=4, ppo_rewards=["gold", "dpo"], ppo_seeds=[0])
FULL = dict(**RM_PARAMS, tasks=["facts", "constraints", "arithmetic"], sizes=[25, 50, 100, 200, 400],
            seeds=[0, 1, 2], sources=PRESET_SOURCES, noise=["zero", "realistic"], n=240, heldout=60, k=4,
            max_new_tokens=48, rm_steps=60, ppo_steps=30, ppo_batch=8, group=4, eval_k=4,
            ppo_rewards=["gold", *PRESET_SOURCES], ppo_seeds=[0, 1, 2])
QUICK = dict(tasks=["facts"], sizes=[25, 50], seeds=[0], sources=PRESET_SOURCES, noise=["zero"], n=32, heldout=12,
             k=4, max_new_tokens=32, rm_steps=8, ppo_steps=4, ppo_batch=4, group=2, eval_k=1,
             ppo_rewards=["gold", "span_bt"], ppo_seeds=[0], rm_lora=False, top_layers=2, rm_lr=2e-4)


def _ppo_flags(p: argparse.ArgumentParser) -> None:
    """The PPO stage's flags (``parse_args``)."""
    p.add_argument("--ppo-rewards", nargs="+", choices=["gold", *SOURCES],
                   help="PPO rewards: gold (sim:TASK, the upper bound) and learned sources (seed 0, largest size; "
                        "default gold dpo)")
    p.add_argument("--ppo-seeds", nargs="+", type=int, help="PPO seeds (default 0)")
    p.add_argument("--ppo-steps", type=int, help="PPO steps per run (default 20)")
    p.add_argument("--ppo-batch", type=int, help="rollouts per PPO step (default 8)")
    p.add_argument("--ppo-noise", default="zero", choices=list(NOISE),
                   help="the annotator noise of the learned rewards PPO uses")
    p.add_argument("--granularities", nargs="+", default=["token", "sequence"], choices=["token", "sequence"])
    p.add_argument("--lr", type=float, default=5e-4,
                   help="PPO learning rate (LoRA; 1e-4 did not move the 135M policy in 20 steps, 2e-3 collapsed it)")
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--advantage", default="rloo", choices=list(ADVANTAGES),
                   help="PPO advantages: rloo (no critic, one baseline per response), prime (no critic, per-token "
                        "leave-one-out baseline), reinforce++ (no critic, batch-normalised) or gae (a critic); rloo "
                        "and prime take --group responses per prompt")
    p.add_argument("--group", type=int, help="rollouts per prompt (each step: ppo-batch / group prompts)")
    p.add_argument("--value-model", default="shared", choices=["shared", "separate"], help="PPO critic")
    p.add_argument("--critic-lr", type=float, default=1e-3, help="the critic's own learning rate (gae)")
    p.add_argument("--critic-warmup", type=int, default=0, help="gae: steps that train the critic alone first")
    p.add_argument("--ppo-lora", action=argparse.BooleanOptionalAction, default=True,
                   help="LoRA policy (--no-ppo-lora: full fine-tuning, for the small `sim policy` models)")
    p.add_argument("--vf-coef", type=float, default=0.05,
                   help="value loss weight (train ppo's 0.5 lets a shared value head's loss swamp the policy "
                        "gradient under clipping: grad norm ~10 from the value loss vs ~1)")
    p.add_argument("--temperature", type=float, default=1.0, help="PPO rollout temperature")
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--target-frac", type=float, default=0.5,
                   help="steps to target: the fraction of the gap from the initial policy to the gold run's final gold")
    p.add_argument("--eval-k", type=int,
                   help="samples per prompt when the initial and every final PPO policy are scored by the gold reward")
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16"], help="PPO's autocast")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the prompts and policy samples")


def parse_args(argv=None, prog: str | None = None):
    """The study's settings from ``argv`` (the preset's values where a flag is not given); exits (argparse)
    on a bad flag."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the study's folder (data, reward models, PPO runs, "
                                                             "study.json); a rerun resumes it")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the smoke-test preset (flags given explicitly still win)")
    size.add_argument("--full", action="store_true",
                      help="the whole grid: 3 tasks, 5 sizes, 2 noise settings, 5 PPO rewards (days on 2 CPU cores)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="backbone of the reward models and the policy")
    p.add_argument("--tasks", nargs="+", help="simulated tasks: facts, constraints, arithmetic (default: constraints; "
                                             "--quick: facts; --full: all three)")
    p.add_argument("--task-options", nargs="*", default=[], metavar="TASK:K=V,...",
                   help="difficulty knobs per task, e.g. facts:slots=1")
    p.add_argument("--sizes", nargs="+", type=int,
                   help="numbers of annotated edit pairs each reward source trains on (nested subsets; default 25 100)")
    p.add_argument("--seeds", nargs="+", type=int, help="reward-model seeds: subset, annotator noise, training (default 0 1 2)")
    p.add_argument("--sources", nargs="+", choices=SOURCES,
                   help="token RM losses span_bt (anchored), span_bt_pure (the paper's), seq_bt, token_cls; dpo: a "
                        "DPO policy read as the dpo-implicit "
                        "token scorer (default: span_bt, seq_bt, token_cls, dpo)")
    p.add_argument("--noise", nargs="+", choices=list(NOISE),
                   help="simulated annotator: zero (a perfect oracle) or realistic (misses, over-edits, flips)")
    p.add_argument("--n", type=int, help="training prompts per task (default 40)")
    p.add_argument("--heldout", type=int, help="held-out prompts per task (default 16)")
    p.add_argument("--k", type=int, help="policy samples per prompt (default 4)")
    p.add_argument("--max-new-tokens", type=int, help="longest policy sample and PPO rollout (default 24)")
    p.add_argument("--rm-steps", type=int, help="optimizer steps of every reward model and DPO policy (default 24)")
    p.add_argument("--rm-batch", type=int, default=8, help="edit pairs per reward-model step")
    p.add_argument("--rm-lr", type=float, help="token RMs' learning rate (default 5e-4; --quick 2e-4)")
    p.add_argument("--rm-lora", action=argparse.BooleanOptionalAction,
                   help="token RMs train LoRA adapters (r 16) on every layer, like the DPO source; --no-rm-lora "
                        "trains full weights of the top --top-layers layers (docs/sim.md compares the two)")
    p.add_argument("--top-layers", type=int, help="token RMs train only the top N layers (0: all; --quick: 2)")
    p.add_argument("--rm-pool", default="sum", choices=["sum", "mean"],
                   help="how a token RM's per-token rewards make a response's score (ranking, sequence-level PPO); "
                        "mean takes the length out of the sum (evaluated apart, in sim_eval_pool-mean.json)")
    p.add_argument("--dpo-beta", type=float, default=0.1, help="DPO's beta, also the implicit reward's scale")
    p.add_argument("--dpo-lr", type=float, default=1e-4, help="DPO policy's learning rate (LoRA)")
    p.add_argument("--eval-limit", type=int, default=200,
                   help="most records read from each held-out set (sample pairs, oracle edits, rated samples)")
    _ppo_flags(p)
    p.add_argument("--stages", nargs="+", default=["data", "rm", "ppo"], choices=["data", "rm", "ppo"],
                   help="run only these stages (rm needs data, ppo with a learned reward needs rm)")
    p.add_argument("--json", type=Path, help="also write the study JSON here")
    p.add_argument("--png-prefix", help="write PREFIX_rm.png and PREFIX_ppo.png")
    a = p.parse_args(argv)
    for k, v in (QUICK if a.quick else FULL if a.full else DEFAULTS).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    bad = [x for x in a.task_options if ":" not in x or x.split(":", 1)[0] not in a.tasks]
    if bad:
        p.error(f"--task-options {bad[0]}: expected TASK:K=V,... for one of --tasks {' '.join(a.tasks)} "
                "(e.g. facts:slots=2)")
    a.opts = dict(x.split(":", 1) for x in a.task_options)
    bad_group = a.group < 1 or a.ppo_batch % a.group or (a.advantage in ("rloo", "prime") and a.group < 2)
    if "ppo" in a.stages and bad_group:
        p.error(f"--group {a.group} must divide --ppo-batch {a.ppo_batch}" + (f" and be >= 2 for --advantage {a.advantage}"
                                                                              if a.advantage in ("rloo", "prime") else ""))
    return a


# ------------------------------------------------------------------------------------------ 1. data

def stage_data(a, task: str, policy) -> Path:
    cfg = SimMakeConfig(task=task, n=a.n, heldout=a.heldout, model=a.model, k=a.k, max_new_tokens=a.max_new_tokens,
                        task_options=a.opts.get(task, ""), seed=a.data_seed, out=str(a.out / "data" / task))
    summary = make_sim(cfg, model=policy())
    print(f"data {task}: train {summary['train']}", file=sys.stderr)
    return Path(cfg.out)


def nested_subset(records: list, n: int, seed: int, what: str) -> list:
    """The first ``n`` of a seeded shuffle, in file order (so the 25 pairs are inside the 50, ...)."""
    if n > len(records):
        raise FinealignError(f"asked for {n} annotated pairs, but the pool of {what} holds only {len(records)} "
                             "edits; raise --n or --k, or lower --sizes")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in sorted(order[:n])]


# ------------------------------------------------------------------------------------------ 2. reward models

def rm_config(a, source: str, out: Path, seed: int):
    """The training config of one reward source, the file its finished (or started) run saved its settings
    in, the settings it will save, and the trainer's own set of settings that change no trained weight
    (``dpo``: ``train.preference``; else ``train.token_rm``)."""
    if source == "dpo":
        import dataclasses

        from ..train.preference import PrefTrainConfig
        from ..train.trl_common import NOT_MADE_BY

        cfg = PrefTrainConfig(method="dpo", model=a.model, data=out / "pairs.jsonl", out=out, beta=a.dpo_beta,
                              learning_rate=a.dpo_lr, steps=a.rm_steps, batch_size=a.rm_batch, max_length=256,
                              lora=True, seed=seed, save_steps=a.rm_steps, logging_steps=max(1, a.rm_steps // 4))
        wanted = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
        return cfg, out / "finealign_train.json", wanted, NOT_MADE_BY
    from ..train.token_rm import RESUMABLE
    from ..train.token_rm_config import TokenRMConfig

    cfg = TokenRMConfig(data=[str(out / "edits.jsonl")], out=str(out), model=a.model, loss=source, lora=a.rm_lora,
                        top_layers=a.top_layers, steps=a.rm_steps, gradient_checkpointing=False,
                        batch_size=a.rm_batch, learning_rate=a.rm_lr, warmup_steps=max(1, a.rm_steps // 8),
                        max_length=256, mixed_precision=a.mixed_precision, seed=seed, eval_every=0,
                        save_every=a.rm_steps, log_every=max(1, a.rm_steps // 4))
    return cfg, out / "train_config.json", cfg.run_settings(), RESUMABLE


def check_rm(a, source: str, out: Path, seed: int):
    """``rm_config``'s config, after refusing an ``out`` that holds a reward source trained with other
    settings (it would otherwise be reported under the new ones). Raises FinealignError naming them."""
    cfg, marker, wanted, not_made_by = rm_config(a, source, out, seed)
    if marker.exists():
        saved = json.loads(marker.read_text())
        saved = saved.get("config", saved) if source == "dpo" else saved
        diff = sorted(k for k in wanted if k not in not_made_by and k in saved and saved[k] != wanted[k])
        if diff:
            raise FinealignError(f"{out} holds a {source} reward model trained with another configuration ("
                                 + ", ".join(f"{k}: {saved[k]!r} there, {wanted[k]!r} now" for k in diff)
                                 + "); give the study another --out")
    return cfg


def train_source(a, source: str, cfg, edits: list[dict], out: Path) -> str:
    """Train one reward source on ``edits`` with ``cfg`` (``check_rm``'s; skipped when finished); returns its
    scorer spec."""
    out.mkdir(parents=True, exist_ok=True)
    if source == "dpo":
        from ..train.preference import train_preference

        if not (out / "finealign_train.json").exists():
            write_jsonl(out / "pairs.jsonl", edits_as_pairs(edits))
            train_preference(cfg)
        return f"dpo-implicit:{out},beta={a.dpo_beta},device=cpu"
    from ..train.token_rm import train_token_rm

    if not (out / "eval.json").exists():
        write_jsonl(out / "edits.jsonl", edits)
        train_token_rm(cfg)
    return f"token-rm:{out},device=cpu" + (f",pool={a.rm_pool}" if a.rm_pool != "sum" else "")


def eval_path(a, source: str, out: Path) -> Path:
    """Where the held-out evaluation of the source trained in ``out`` is cached (one file per token-RM pool)."""
    return out / ("sim_eval.json" if source == "dpo" or a.rm_pool == "sum" else f"sim_eval_pool-{a.rm_pool}.json")


def stage_rm(a, task: str, data: Path) -> list[dict]:
    t = make_task(task, a.opts.get(task))
    rows = []
    samples = read_samples(data / "samples.jsonl")
    pools = {(noise, seed): derive(t, samples, NOISE[noise], seed)[1] for noise in a.noise for seed in a.seeds}
    for (noise, seed), pool in pools.items():  # every size fits every pool, or nothing is trained
        nested_subset(pool, max(a.sizes), seed, f"{task} (noise {noise})")
    for noise in a.noise:
        for seed in a.seeds:
            pool = pools[(noise, seed)]
            for size in a.sizes:
                edits = nested_subset(pool, size, seed, f"{task} (noise {noise})")
                for source in a.sources:
                    r = rm_row(a, t, data, dict(task=task, noise=noise, seed=seed, size=size, source=source), edits)
                    rows.append(r)
                    print(f"rm {task} {noise} s{seed} n{size} {source}: pair {r['pair_acc']} (length-balanced "
                          f"{r['pair_acc_length_balanced']}) edit {r['edit_acc']} auroc {r['token_auroc']}",
                          file=sys.stderr)
    return rows


# keys every cached evaluation must hold; one made by an older study is measured again (not retrained)
EVAL_KEYS = ("pair_acc", "pair_acc_length_balanced", "edit_acc", "token_auroc", "eval_limit")


def rm_row(a, t, data: Path, key: dict, edits: list[dict]) -> dict:
    """Train (or reuse) one reward source and measure it on the held-out sets; cached in ``eval_path``."""
    out = a.out / "rm" / key["task"] / key["noise"] / f"s{key['seed']}" / f"{key['source']}_n{key['size']}"
    done = eval_path(a, key["source"], out)
    cfg = check_rm(a, key["source"], out, key["seed"])
    row = json.loads(done.read_text()) if done.exists() else None
    if row and all(k in row for k in EVAL_KEYS) and row["eval_limit"] == a.eval_limit:
        return row
    t0 = time.perf_counter()
    spec = row["spec"] if row else train_source(a, key["source"], cfg, edits, out)
    scorer = load_scorer(spec)
    ev = evaluate_reward(scorer, t, data / "heldout", limit=a.eval_limit)
    scorer.close()
    # the training's (with its first evaluation), not a re-evaluation's, nor another pool's evaluation's
    first = row or next((json.loads(f.read_text()) for f in sorted(out.glob("sim_eval*.json"))), None)
    seconds = first["seconds"] if first else round(time.perf_counter() - t0, 1)
    pool = None if key["source"] == "dpo" else a.rm_pool
    row = {**key, "pool": pool, "spec": spec, "seconds": seconds, "eval_limit": a.eval_limit, **ev}
    write_json(done, row)
    return row


# ------------------------------------------------------------------------------------------ 3. PPO

class GoldTracking(TokenScorer):
    """A reward scorer that also records the gold score of every batch it scores (``last``)."""

    def __init__(self, inner, gold):
        self.inner, self.gold, self.last = inner, gold, []
        self.name = getattr(inner, "name", "reward")

    def score(self, prompts, responses):
        self.last = self.gold.score(prompts, responses)
        return self.inner.score(prompts, responses)

    def score_tokens(self, prompts, responses):
        self.last = self.gold.score(prompts, responses)
        return self.inner.score_tokens(prompts, responses)


def ppo_run(a, task: str, data: Path, reward: str, gran: str, seed: int) -> dict:
    from ..train.ppo import check_settings, train_ppo
    from ..train.ppo_config import PPOConfig

    out = a.out / "ppo" / task / f"{reward}_{gran}_s{seed}"
    gold = load_scorer(f"sim:{task}")
    if reward == "gold":
        spec = f"sim:{task}"
    else:
        size = max(a.sizes)
        spec = json.loads(eval_path(a, reward, a.out / "rm" / task / a.ppo_noise / "s0" / f"{reward}_n{size}")
                          .read_text())["spec"]
    log_path = out / "gold.jsonl"
    have = {o["step"] for _, o in iter_objects(log_path)} if log_path.exists() else set()
    mb = min(4, a.ppo_batch)
    cfg = PPOConfig(model=a.model, reward=spec, prompts=str(data / "prompts.jsonl"), out=str(out),
                    granularity=gran, steps=a.ppo_steps, batch_size=a.ppo_batch, minibatch_size=a.ppo_batch,
                    micro_batch_size=mb if a.ppo_batch % mb == 0 else 1, ppo_epochs=a.ppo_epochs,
                    value_model=a.value_model, vf_coef=a.vf_coef, temperature=a.temperature, lora=a.ppo_lora,
                    critic_lr=a.critic_lr, critic_warmup=a.critic_warmup,
                    advantage=a.advantage, rollouts_per_prompt=a.group,
                    max_new_tokens=a.max_new_tokens, learning_rate=a.lr, kl_coef=a.kl_coef,
                    mixed_precision=a.mixed_precision, seed=seed, save_every=max(1, a.ppo_steps // 3))
    check_settings(cfg)  # a finished run made with other settings is refused, not reported as this one
    if len(have) < a.ppo_steps:
        scorer = GoldTracking(load_scorer(spec), gold)
        with JsonlAppender(log_path, key=lambda o: o["step"]) as app:
            def on_step(step, total, m):
                if step not in app:
                    app.append({"step": step, "gold": statistics.fmean(scorer.last), "proxy": m["score"],
                                "kl": m["kl"], "response_length": m.get("response_length")})

            train_ppo(cfg, scorer=scorer, on_step=on_step)
        scorer.inner.close()
    curve = sorted((o for _, o in iter_objects(log_path)), key=lambda o: o["step"])
    final = policy_gold(a, task, data, str(out / "policy"), out / "final_eval.json")
    return {"task": task, "reward": reward, "granularity": gran, "seed": seed, "spec": spec, "curve": curve,
            "final_eval": final}


def policy_gold(a, task: str, data: Path, spec: str, cache: Path) -> dict:
    """Gold score of ``--eval-k`` samples per prompt of the policy ``spec`` (at the rollout temperature,
    top-p 1) on the training prompts (what PPO optimised) and the held-out prompts; cached in ``cache``."""
    settings = {"spec": spec, "k": a.eval_k, "temperature": a.temperature, "max_new_tokens": a.max_new_tokens}
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    if cached.get("settings") == settings:
        return cached
    from ..generation import generate_batch
    from ..models import load_model

    model, tok = load_model(spec, device="cpu")
    gold = load_scorer(f"sim:{task}")
    res: dict = {"settings": settings}
    for split, d in (("train", data), ("heldout", data / "heldout")):
        prompts = [o["prompt"] for _, o in iter_objects(d / "prompts.jsonl")] if (d / "prompts.jsonl").exists() else []
        if not prompts:
            continue
        rows = generate_batch(model, tok, prompts, n=a.eval_k, temperature=a.temperature, top_p=1.0,
                              max_new_tokens=a.max_new_tokens, seed=a.data_seed + 1, batch_size=8)
        scores = gold.score([p for p, row in zip(prompts, rows) for _ in row], [r for row in rows for r in row])
        res[split] = {"gold": statistics.fmean(scores), "perfect": sum(x >= 1.0 for x in scores) / len(scores),
                      "samples": len(scores)}
    write_json(cache, res)
    return res


def _eval_mean(xs: list[dict], split: str) -> dict | None:
    """Mean and min/max over seeds of the final policies' gold score on ``split`` (None when not evaluated)."""
    v = [x["eval"][split]["gold"] for x in xs if x.get("eval") and split in x["eval"]]
    return {"mean": statistics.fmean(v), "range": [min(v), max(v)]} if v else None


def summarize_ppo(runs: list[dict], frac: float, initial_eval: dict | None = None) -> dict:
    """Per task: initial gold, target, and per (reward, granularity) the finals, steps to target, KL, flags.

    ``initial_eval``: per task, ``policy_gold`` of the initial policy (reported beside the final policies')."""
    out = {}
    for task in sorted({r["task"] for r in runs}):
        rs = [r for r in runs if r["task"] == task and r["curve"]]
        init = statistics.fmean(r["curve"][0]["gold"] for r in rs)
        final = lambda r: statistics.fmean(o["gold"] for o in r["curve"][-3:])  # noqa: E731
        golds = [statistics.fmean(final(r) for r in rs if r["reward"] == "gold" and r["granularity"] == g)
                 for g in {r["granularity"] for r in rs if r["reward"] == "gold"}]
        best = max(golds) if golds else None
        target = None if best is None or best <= init else init + frac * (best - init)
        groups: dict = {}
        for r in rs:
            g = r["curve"]
            third = max(1, len(g) // 3)
            gold_ma = moving([o["gold"] for o in g])
            # step 1's rollouts come from the initial policy: only steps after an update can reach the target;
            # a run that touched it by noise and ended below it (last 3 steps) has not reached it ("lost")
            touched = None if target is None else next((o["step"] for o, m in zip(g, gold_ma)
                                                        if o["step"] > 1 and m >= target), None)
            reach = touched if touched is not None and final(r) >= target else None
            first, last = g[:third], g[-third:]
            over = (statistics.fmean(o["proxy"] for o in last) > statistics.fmean(o["proxy"] for o in first)
                    and statistics.fmean(o["gold"] for o in last) < statistics.fmean(o["gold"] for o in first))
            groups.setdefault(f"{r['reward']}/{r['granularity']}", []).append(
                {"seed": r["seed"], "final_gold": final(r), "gain": final(r) - init, "steps_to_target": reach,
                 "lost": touched is not None and reach is None,
                 "final_kl": statistics.fmean(o["kl"] for o in g[-3:]), "over_optimised": over,
                 "eval": r.get("final_eval")})
        summary = {}
        for key, xs in groups.items():
            steps = [x["steps_to_target"] for x in xs if x["steps_to_target"] is not None]
            summary[key] = {"runs": xs, "final_gold": statistics.fmean(x["final_gold"] for x in xs),
                            "gain": statistics.fmean(x["gain"] for x in xs),
                            "reached": f"{len(steps)} of {len(xs)}" + (f" ({lost} touched it, ended below)"
                                                                        if (lost := sum(x["lost"] for x in xs)) else ""),
                            "mean_steps_to_target": statistics.fmean(steps) if steps else None,
                            "steps_range": [min(steps), max(steps)] if steps else None,
                            "final_kl": statistics.fmean(x["final_kl"] for x in xs),
                            "over_optimised": sum(x["over_optimised"] for x in xs),
                            "final_policy_gold": {sp: _eval_mean(xs, sp) for sp in ("train", "heldout")}}
        ratios = {}
        for key in {k.split("/")[0] for k in summary}:
            tok, seq = summary.get(f"{key}/token"), summary.get(f"{key}/sequence")
            # every seed of both must have reached it: a mean over the seeds that did would drop the slowest
            if tok and seq and all(x["steps_to_target"] for x in tok["runs"] + seq["runs"]):
                (tl, th), (sl, sh) = tok["steps_range"], seq["steps_range"]
                # ratio of the seed means, and its range over the seeds' extremes (3 seeds: no bootstrap)
                ratios[key] = {"ratio": seq["mean_steps_to_target"] / tok["mean_steps_to_target"],
                               "range": [sl / th, sh / tl], "reached": [tok["reached"], seq["reached"]]}
        if not ratios:
            ratios["note"] = ("no gold-reward run improved on the first batch" if target is None
                              else "not every token and sequence run reached the target")
        out[task] = {"initial_gold": init, "gold_run_final": best, "target": target, "by_run": summary,
                     "initial_policy_gold": (initial_eval or {}).get(task),
                     "speedup_token_over_sequence": ratios}
    return out


# ------------------------------------------------------------------------------------------ report

def summarize_rm(rows: list[dict]) -> list[dict]:
    """Mean and min/max over seeds per (task, noise, source, size); the held-out set's sizes (the same for every
    seed) and each model's training seconds (its own timer, with its first evaluation)."""
    keys = sorted({(r["task"], r["noise"], r["source"], r["size"]) for r in rows})
    out = []
    for k in keys:
        rs = [r for r in rows if (r["task"], r["noise"], r["source"], r["size"]) == k]
        row = dict(zip(("task", "noise", "source", "size"), k), seeds=len(rs), pool=rs[0].get("pool"))
        row.update({m: rs[0].get(m) for m in ("n_pairs", "n_pairs_longer_better", "n_edits", "n_tokens", "n_wrong_tokens")})
        for m in ("pair_acc", "pair_acc_length_balanced", "edit_acc", "token_auroc", "length_pair_acc", "seconds"):
            v = [r[m] for r in rs if r[m] is not None and not math.isnan(r[m])]
            row[m] = statistics.fmean(v) if v else None
            row[m + "_range"] = [min(v), max(v)] if v else None
        out.append(row)
    return out


def main(argv=None, prog: str | None = None, echo: bool = True) -> dict:
    """Run (or resume) the study; returns what it writes to OUT/study.json (see the module docstring) and, with
    ``echo``, prints its summary as JSON on stdout."""
    a = parse_args(argv, prog)
    for task in a.tasks:  # an unknown task or option fails before anything is written
        make_task(task, a.opts.get(task))
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    loaded = {}

    def policy():
        if "m" not in loaded:
            from ..models import load_model

            loaded["m"] = load_model(a.model, device="cpu")
        return loaded["m"]

    data = {t: stage_data(a, t, policy) for t in a.tasks}
    loaded.clear()
    t_data = time.perf_counter()
    rm_rows = [r for t in a.tasks for r in stage_rm(a, t, data[t])] if "rm" in a.stages else []
    t_rm = time.perf_counter()
    runs = [ppo_run(a, t, data[t], rew, g, s) for t in a.tasks for rew in a.ppo_rewards
            for g in a.granularities for s in a.ppo_seeds] if "ppo" in a.stages else []
    initial_eval = {t: policy_gold(a, t, data[t], a.model, a.out / "ppo" / t / "initial_eval.json")
                    for t in a.tasks} if runs else {}
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "initial_policy": {t: json.loads((data[t] / "summary.json").read_text())["train"] for t in a.tasks},
              "reward_models": summarize_rm(rm_rows), "ppo": summarize_ppo(runs, a.target_frac, initial_eval),
              "ppo_curves": runs, "seconds": {"data": round(t_data - t0, 1), "reward_models": round(t_rm - t_data, 1),
                                              "ppo": round(time.perf_counter() - t_rm, 1),
                                              "total": round(time.perf_counter() - t0, 1)}}
    # a rerun skips finished pieces, so its wall time is not the study's: keep every earlier invocation's
    prev = json.loads((a.out / "study.json").read_text()) if (a.out / "study.json").exists() else {}
    result["earlier_invocations"] = [*prev.get("earlier_invocations", []), *([prev["seconds"]] if prev else [])]
    write_json(a.out / "study.json", result)
    if a.json:
        write_json(a.json, result)
    if a.png_prefix:
        plot(a, result["reward_models"], runs, result["ppo"])
    if echo:
        print(to_json({k: result[k] for k in ("initial_policy", "reward_models", "ppo", "seconds")}))
    return result


if __name__ == "__main__":
    try:
        main(prog="python -m finealign.pipeline.sim_study")
    except FinealignError as e:  # bad input: one line, no traceback
        sys.exit(f"error: {e}")
