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

import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

from ..data.io import JsonlAppender, iter_objects, to_json, write_json, write_jsonl
from ..errors import FinealignError
from ..rewards.base import TokenScorer, load_scorer
from ..sim import make_task
from ..sim.annotator import REALISTIC, Noise
from ..sim.evaluate import evaluate_reward
from ..sim.make import SimMakeConfig, derive, edits_as_pairs, make_sim, read_samples
from .sim_curve import curve_log_every, curve_path, curve_points, curve_probe
from .sim_plots import plot
from .sim_study_config import (DEFAULTS, FAST, FULL, PRESET_SOURCES, PRESETS, QUICK, SOURCES,  # noqa: F401
                               SimStudyConfig, parse_study_args, resolve)
from .sim_summary import summarize_ppo, summarize_rm

NOISE = {"zero": Noise(), "realistic": REALISTIC}


def parse_args(argv=None, prog: str | None = None):
    """The study's settings from ``argv``, resolved (``sim_study_config.resolve``: the preset's values where a
    flag is not given); exits (argparse) on an unknown flag, raises ``FinealignError`` for a bad value."""
    return resolve(parse_study_args(argv, prog, description=__doc__.split("\n\n")[0]))


# ------------------------------------------------------------------------------------------ 1. data

def model_for(a, task: str) -> str:
    """The policy and reward-model backbone of ``task``: ``--policies DIR``'s DIR/TASK, else ``--model``."""
    return str(a.policies / task) if a.policies else a.model


def build_policy(a, task: str) -> str:
    """Train ``task``'s small policy under ``--policies`` (``finealign sim policy``, seed 0, the task's
    ``--task-options``; a finished one is kept, a half-trained one resumed); returns its folder."""
    from ..sim.policy import SimPolicyConfig, policy_record
    from ..train.sim_policy import gold_line, train_task_policy

    out = a.policies / task
    rec = policy_record(str(out))
    if rec and rec.get("status") == "done":
        return str(out)
    rec = train_task_policy(SimPolicyConfig(task=task, task_options=a.opts.get(task, ""), size=a.policy_size,
                                            out=str(out)),
                            log=lambda m: print(m, file=sys.stderr))
    print(f"policy {task}: {gold_line(rec)}", file=sys.stderr)
    return str(out)


def stage_data(a, task: str) -> Path:
    """``finealign sim make`` for ``task`` with its policy (``model_for``) under OUT/data/TASK."""
    cfg = SimMakeConfig(task=task, n=a.n, heldout=a.heldout, model=model_for(a, task), k=a.k,
                        max_new_tokens=a.max_new_tokens, task_options=a.opts.get(task, ""), seed=a.data_seed,
                        out=str(a.out / "data" / task), device="cpu")
    summary = make_sim(cfg)
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

def rm_config(a, source: str, out: Path, seed: int, task: str):
    """The training config of one reward source, the file its finished (or started) run saved its settings
    in, the settings it will save, and the trainer's own set of settings that change no trained weight
    (``dpo``: ``train.preference``; else ``train.token_rm``)."""
    if source == "dpo":
        import dataclasses

        from ..data.identity import resumable_fields
        from ..train.preference import PrefTrainConfig

        cfg = PrefTrainConfig(method="dpo", model=model_for(a, task), data=out / "pairs.jsonl", out=out, beta=a.dpo_beta,
                              learning_rate=a.dpo_lr, steps=a.rm_steps, batch_size=a.rm_batch, max_length=256,
                              lora=True, seed=seed, save_steps=a.rm_steps, logging_steps=max(1, a.rm_steps // 4))
        wanted = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
        return cfg, out / "finealign_train.json", wanted, resumable_fields(PrefTrainConfig)
    from ..data.identity import resumable_fields
    from ..train.token_rm_config import TokenRMConfig

    cfg = TokenRMConfig(data=[str(out / "edits.jsonl")], out=str(out), model=model_for(a, task), loss=source, lora=a.rm_lora,
                        top_layers=a.top_layers, steps=a.rm_steps, gradient_checkpointing=False,
                        batch_size=a.rm_batch, learning_rate=a.rm_lr, warmup_steps=max(1, a.rm_steps // 8),
                        max_length=256, mixed_precision=a.mixed_precision, seed=seed, eval_every=0,
                        save_every=a.rm_steps, log_every=curve_log_every(a.rm_steps, a.rm_curve))
    return cfg, out / "train_config.json", cfg.run_settings(), resumable_fields(TokenRMConfig)


def check_rm(a, source: str, out: Path, seed: int, task: str):
    """``rm_config``'s config, after refusing an ``out`` that holds a reward source trained with other
    settings (it would otherwise be reported under the new ones). Raises FinealignError naming them."""
    cfg, marker, wanted, not_made_by = rm_config(a, source, out, seed, task)
    if marker.exists():
        saved = json.loads(marker.read_text())
        saved = saved.get("config", saved) if source == "dpo" else saved
        diff = sorted(k for k in wanted if k not in not_made_by and k in saved and saved[k] != wanted[k])
        if diff:
            raise FinealignError(f"{out} holds a {source} reward model trained with another configuration ("
                                 + ", ".join(f"{k}: {saved[k]!r} there, {wanted[k]!r} now" for k in diff)
                                 + "); give the study another --out")
    return cfg


def train_source(a, source: str, cfg, edits: list[dict], out: Path, probe=None) -> str:
    """Train one reward source on ``edits`` with ``cfg`` (``check_rm``'s; skipped when finished); returns its
    scorer spec. A token RM calls ``probe`` (``sim_curve.curve_probe``'s) after each ``--rm-curve`` step."""
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
        train_token_rm(cfg, probe=probe, probe_steps=set(a.rm_curve))
    return f"token-rm:{out},device=cpu" + (f",pool={a.rm_pool}" if a.rm_pool != "sum" else "")


def eval_path(a, source: str, out: Path) -> Path:
    """Where the held-out evaluation of the source trained in ``out`` is cached (one file per token-RM pool)."""
    return out / ("sim_eval.json" if source == "dpo" or a.rm_pool == "sum" else f"sim_eval_pool-{a.rm_pool}.json")


def rm_jobs(a, task: str, data: Path) -> list[tuple]:
    """``rm_row``'s jobs of ``task``: (data, key, edits) per noise, seed, size and source. Raises FinealignError
    (before anything is trained) when a size does not fit a pool of edits."""
    t = make_task(task, a.opts.get(task))
    samples = read_samples(data / "samples.jsonl")
    pools = {(noise, seed): derive(t, samples, NOISE[noise], seed)[1] for noise in a.noise for seed in a.seeds}
    for (noise, seed), pool in pools.items():  # every size fits every pool, or nothing is trained
        nested_subset(pool, max(a.sizes), seed, f"{task} (noise {noise})")
    return [(data, dict(task=task, noise=noise, seed=seed, size=size, source=source),
             nested_subset(pools[(noise, seed)], size, seed, f"{task} (noise {noise})"))
            for noise in a.noise for seed in a.seeds for size in a.sizes for source in a.sources]


def rm_line(r: dict) -> str:
    return (f"rm {r['task']} {r['noise']} s{r['seed']} n{r['size']} {r['source']}: pair {r['pair_acc']} "
            f"(length-balanced {r['pair_acc_length_balanced']}) edit {r['edit_acc']} auroc {r['token_auroc']}")


def run_jobs(a, fn, jobs: list[tuple]) -> list:
    """``fn(a, *job)`` for every job, in order; with ``--jobs`` N > 1 in N spawned processes of one thread each
    (their errors are raised here)."""
    if a.jobs <= 1 or len(jobs) <= 1:
        return [fn(a, *j) for j in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(a.jobs, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as ex:
        futures = [ex.submit(fn, a, *j) for j in jobs]
        return [f.result() for f in futures]


def _one_thread() -> None:
    """A worker process of ``run_jobs``: one thread for every math library (two jobs on two cores)."""
    import os

    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[k] = "1"
    import torch

    torch.set_num_threads(1)


# keys every cached evaluation must hold; one made by an older study is measured again (not retrained)
EVAL_KEYS = ("pair_acc", "pair_acc_length_balanced", "edit_acc", "token_auroc", "eval_limit")


def rm_row(a, data: Path, key: dict, edits: list[dict]) -> dict:
    """Train (or reuse) one reward source on ``edits`` and measure it on the held-out sets of ``data``; cached in
    ``eval_path``."""
    out = a.out / "rm" / key["task"] / key["noise"] / f"s{key['seed']}" / f"{key['source']}_n{key['size']}"
    done = eval_path(a, key["source"], out)
    cfg = check_rm(a, key["source"], out, key["seed"], key["task"])
    row = json.loads(done.read_text()) if done.exists() else None
    if row and all(k in row for k in EVAL_KEYS) and row["eval_limit"] == a.eval_limit:
        return with_curve(a, row, done)
    t = make_task(key["task"], a.opts.get(key["task"]))
    t0 = time.perf_counter()
    probe = (curve_probe(t, data / "heldout", curve_path(done), a.rm_pool, a.eval_limit)
             if a.rm_curve and key["source"] != "dpo" else None)
    spec = row["spec"] if row else train_source(a, key["source"], cfg, edits, out, probe)
    scorer = load_scorer(spec)
    ev = evaluate_reward(scorer, t, data / "heldout", limit=a.eval_limit)
    scorer.close()
    # the training's (with its first evaluation), not a re-evaluation's, nor another pool's evaluation's
    first = row or next((json.loads(f.read_text()) for f in sorted(out.glob("sim_eval*.json"))), None)
    seconds = first["seconds"] if first else round(time.perf_counter() - t0, 1)
    pool = None if key["source"] == "dpo" else a.rm_pool
    row = {**key, "pool": pool, "spec": spec, "seconds": seconds, "eval_limit": a.eval_limit, **ev}
    write_json(done, row)
    print(rm_line(row), file=sys.stderr)
    return with_curve(a, row, done)


def with_curve(a, row: dict, done: Path) -> dict:
    """``row`` with its ``--rm-curve`` learning curve (``sim_curve.curve_points``; a dpo source has none); warns
    on stderr when the model was trained before some curve steps were asked for."""
    if not a.rm_curve or row["source"] == "dpo":
        return row
    curve = curve_points(done, row, a.rm_steps, a.rm_curve)
    if curve["missing"]:
        print(f"warning: {done.parent} was trained without curve points at steps "
              f"{' '.join(map(str, curve['missing']))}; give the study another --out to measure them",
              file=sys.stderr)
    return {**row, "curve": curve["points"]}


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


def ppo_jobs(a, data: dict) -> list[tuple]:
    """``ppo_run``'s jobs: every task x reward x granularity x seed (``--learned-tasks`` and ``--learned-seeds``
    for the learned rewards), the gold reward's first (the target every run is measured against)."""
    return [(t, data[t], rew, g, s) for rew in a.ppo_rewards for t in (a.tasks if rew == "gold" else a.learned_tasks)
            for g in a.granularities for s in (a.ppo_seeds if rew == "gold" else a.learned_seeds)]


def _mean(steps: list[dict], key: str) -> float:
    return statistics.fmean(o.get(key) or 0.0 for o in steps) if steps else 0.0


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
    cfg = PPOConfig(model=model_for(a, task), reward=spec, prompts=str(data / "prompts.jsonl"), out=str(out),
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
    last = curve[-3:]  # the summary's final values: the mean of the last 3 steps (studies.sim_summary)
    print(f"ppo {task} {reward}/{gran} s{seed}: gold {curve[0]['gold']:.3f} -> {_mean(last, 'gold'):.3f} "
          f"({len(curve)} steps; last 3: KL {_mean(last, 'kl'):.2f}, length {_mean(last, 'response_length'):.1f})",
          file=sys.stderr)
    return {"task": task, "reward": reward, "granularity": gran, "seed": seed, "spec": spec, "curve": curve,
            "final_eval": final, "seconds": _phase_seconds(out / "metrics.jsonl")}


def _phase_seconds(metrics: Path) -> dict | None:
    """Total seconds per phase of a PPO run's steps (``train.ppo``'s metrics: generate, reward, ref_value,
    update, total), None when the run logged none."""
    rows = [o for _, o in iter_objects(metrics)] if metrics.exists() else []
    if not rows:
        return None
    phases = {k: round(sum(o.get(f"seconds_{k}", 0.0) for o in rows), 1)
              for k in ("generate", "reward", "ref_value", "update")}
    return {**phases, "total": round(sum(o.get("seconds", 0.0) for o in rows), 1)}


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


# ------------------------------------------------------------------------------------------ report

def main(argv=None, prog: str | None = None, echo: bool = True) -> dict:
    """Run (or resume) the study from command-line flags (``argv``); returns what it writes to OUT/study.json
    (see the module docstring) and, with ``echo``, prints its summary as JSON on stdout."""
    return run_study(parse_args(argv, prog), echo=echo)


def run_sim_study(cfg: SimStudyConfig, echo: bool = False) -> dict:
    """Run (or resume) the study ``cfg`` describes (the verb ``sim-study``: ``finealign sim study``, a recipe's
    ``type: sim-study``); returns what it writes to OUT/study.json. Raises ``FinealignError`` for bad input."""
    return run_study(resolve(cfg), echo=echo)


def run_study(a, echo: bool = True) -> dict:
    """The study on resolved settings ``a`` (``sim_study_config.resolve``)."""
    for task in a.tasks:  # an unknown task or option, a policy made for another task: fails before any output
        make_task(task, a.opts.get(task))
        if a.policies:
            from ..sim.policy import check_policy_task

            check_policy_task(model_for(a, task), task, flag="--policies")
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.policies:
        run_jobs(a, build_policy, [(t,) for t in a.tasks])
    t_policies = time.perf_counter()
    data = {t: stage_data(a, t) for t in a.tasks}
    t_data = time.perf_counter()
    rm_rows = (run_jobs(a, rm_row, [j for t in a.learned_tasks for j in rm_jobs(a, t, data[t])])
               if "rm" in a.stages else [])
    t_rm = time.perf_counter()
    runs = run_jobs(a, ppo_run, ppo_jobs(a, data)) if "ppo" in a.stages else []
    initial_eval = {t: policy_gold(a, t, data[t], model_for(a, t), a.out / "ppo" / t / "initial_eval.json")
                    for t in a.tasks} if runs else {}
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
              "initial_policy": {t: json.loads((data[t] / "summary.json").read_text())["train"] for t in a.tasks},
              "reward_models": summarize_rm(rm_rows), "ppo": summarize_ppo(runs, a.target_frac, initial_eval),
              "ppo_curves": runs, "seconds": {"policies": round(t_policies - t0, 1), "data": round(t_data - t_policies, 1), "reward_models": round(t_rm - t_data, 1),
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
        print(to_json({k: result[k] for k in ("initial_policy", "reward_models", "ppo", "seconds")}, indent=1))
    return result


if __name__ == "__main__":
    try:
        main(prog="python -m finealign.pipeline.sim_study")
    except FinealignError as e:  # bad input: one line, no traceback
        sys.exit(f"error: {e}")
