"""Fine-grained (token) vs sequence-level PPO at equal steps and seeds, judged by a scorer it never saw.

For every seed and granularity this runs ``finealign train ppo`` with the same policy, reward (a token
RM: per-token rewards for ``token``, their sum on the last token for ``sequence``), prompts and
settings, so the reward's placement is the only difference. Then:

* curves: score (the reward model's) and KL per step, via ``benchmarks/ppo_curves.py`` (PNG + steps
  to ``--target``);
* win rate: the initial policy and every final policy answer the held-out prompts (greedy,
  ``finealign generate``), an independent judge scores each answer (``finealign score``, default
  FLR with the default model: not the reward model, not trained on anything here), and a final
  policy wins a prompt when the judge scores its answer above the initial policy's (ties count 1/2).
  Reported per run and per granularity (pooled over seeds) with a bootstrap 95% interval.

Everything lands under ``--out``; a rerun resumes (PPO runs from their checkpoints, generations and
scores from their JSONL files), so the study can be grown a seed at a time.

    python benchmarks/ppo_study.py --reward token-rm:runs/token_rm_curve/span_bt_nall_s0 \
        --out runs/ppo_study --seeds 0 1 2 --steps 30 --png docs/ppo_study.png
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "finealign.cli.main", *map(str, args)]


def write_prompts(out: Path, n_train: int, n_eval: int) -> tuple[Path, Path]:
    """Training prompts: the first ``n_train`` AlpacaEval instructions; held-out: MT-Bench first turns
    (every other question, so each category is represented)."""
    from finealign.data.adapters import load_dataset
    from finealign.data.io import write_jsonl

    train, ev = out / "train_prompts.jsonl", out / "eval_prompts.jsonl"
    if not train.exists():
        seen, rows = set(), []
        for r in load_dataset("alpaca-eval"):
            if r.prompt not in seen:
                seen.add(r.prompt)
                rows.append({"id": f"alpaca_{len(rows)}", "prompt": r.prompt})
        write_jsonl(train, rows[:n_train])
    if not ev.exists():
        mt = load_dataset("mt-bench")
        write_jsonl(ev, [{"id": f"mt_bench_{r.id}", "prompt": r.prompt} for r in mt[::2][:n_eval]])
    return train, ev


def run_ppo(a, train: Path, gran: str, seed: int) -> Path:
    out = a.out / f"{gran}_s{seed}"
    if (out / "summary.json").exists():
        return out
    subprocess.run(_cli("train", "ppo", "--policy", a.policy, "--reward", a.reward, "--prompts", train, "--out", out,
                        "--granularity", gran, "--seed", seed, "--steps", a.steps, "--batch-size", a.batch,
                        "--minibatch-size", a.batch, "--micro-batch-size", a.batch, "--ppo-epochs", a.epochs,
                        "--max-new-tokens", a.new_tokens, "--lr", a.lr, "--kl-coef", a.kl_coef,
                        "--mixed-precision", a.mixed_precision, "--save-every", 5, "--log-samples-every", 5,
                        "--quiet"), check=True, stdout=subprocess.DEVNULL)
    return out


def answers(a, model: str, prompts: Path, name: str) -> Path:
    gen, scored = a.out / "answers" / f"{name}.jsonl", a.out / "answers" / f"{name}.scored.jsonl"
    gen.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(_cli("generate", "--prompts", prompts, "--out", gen, "--model", model, "--k", 1, "--temperature", 0,
                        "--max-new-tokens", a.eval_new_tokens, "--batch-size", 8, "--quiet"),
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(_cli("score", gen, scored, "--scorer", a.judge, "--quiet"), check=True, stdout=subprocess.DEVNULL)
    return scored


def _scores(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = r.get("prompt_id") or r.get("id") or r["prompt"]
        out[str(key)] = float(r["score"])
    return out


def answer_stats(path: Path) -> dict:
    """Judge mean score, mean answer length in tokens, and distinct-2 (unique word bigrams / bigrams: low
    values mean repetition) of one policy's held-out answers."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    bigrams = [tuple(w[i:i + 2]) for r in rows for w in [r["completion"].split()] for i in range(len(w) - 1)]
    return {"judge_mean": round(sum(float(r["score"]) for r in rows) / len(rows), 4),
            "answer_tokens_mean": round(sum(r.get("meta", {}).get("n_tokens", 0) for r in rows) / len(rows), 1),
            "distinct_2": round(len(set(bigrams)) / max(1, len(bigrams)), 3)}


def win_rate(final: dict[str, float], init: dict[str, float], n_boot: int = 2000, seed: int = 0) -> dict:
    keys = sorted(set(final) & set(init))
    wins = [1.0 if final[k] > init[k] else 0.5 if final[k] == init[k] else 0.0 for k in keys]
    rng = random.Random(seed)
    boots = sorted(sum(rng.choice(wins) for _ in wins) / len(wins) for _ in range(n_boot))
    return {"n": len(wins), "win_rate": round(sum(wins) / len(wins), 4),
            "ci95": [round(boots[int(0.025 * n_boot)], 4), round(boots[int(0.975 * n_boot) - 1], 4)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--policy", default="smollm2-135m-instruct")
    ap.add_argument("--reward", required=True, help="scorer spec; a token RM for the token/sequence contrast")
    ap.add_argument("--judge", default="flr:smollm2-135m-instruct", help="independent scorer for win rates")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--granularities", nargs="+", default=["token", "sequence"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--eval-new-tokens", type=int, default=96)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--kl-coef", type=float, default=0.05)
    ap.add_argument("--mixed-precision", default="auto")
    ap.add_argument("--n-train-prompts", type=int, default=240)
    ap.add_argument("--n-eval-prompts", type=int, default=40)
    ap.add_argument("--target", type=float, default=None, help="score to reach (default: halfway from the first "
                    "steps' mean to the best final mean)")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--skip-judge", action="store_true", help="curves only")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    train, ev = write_prompts(a.out, a.n_train_prompts, a.n_eval_prompts)
    runs = [run_ppo(a, train, g, s) for s in a.seeds for g in a.granularities]

    sys.path.insert(0, str(HERE))
    from ppo_curves import load, moving

    w = 3
    curves = {str(r): load(r) for r in runs}
    firsts = [sum(x["score"] for x in rows[:w]) / w for _, rows in curves.values()]
    lasts = [sum(x["score"] for x in rows[-w:]) / w for _, rows in curves.values()]
    target = a.target if a.target is not None else sum(firsts) / len(firsts) + 0.5 * (max(lasts) - sum(firsts) / len(firsts))
    cmd = [sys.executable, str(HERE / "ppo_curves.py"), *map(str, runs), "--target", f"{target:.4f}", "--window", str(w)]
    if a.png:
        cmd += ["--png", str(a.png)]
    curve = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    result: dict = {"policy": a.policy, "reward": a.reward, "judge": a.judge, "steps": a.steps, "batch": a.batch,
                    "seeds": a.seeds, "target": round(target, 4), "runs": curve["runs"]}
    for g in a.granularities:
        hits = [curve["runs"][str(r)]["steps_to_target"] for r in runs if curve["runs"][str(r)]["granularity"] == g]
        result.setdefault("by_granularity", {})[g] = {
            "steps_to_target": hits, "score_last_mean": round(sum(curve["runs"][str(r)]["score_last"] for r in runs
                                                                  if curve["runs"][str(r)]["granularity"] == g) / len(a.seeds), 4),
            "kl_last_mean": round(sum(curve["runs"][str(r)]["kl_last"] for r in runs
                                      if curve["runs"][str(r)]["granularity"] == g) / len(a.seeds), 4)}
    if not a.skip_judge:
        init_path = answers(a, a.policy, ev, "initial")
        init = _scores(init_path)
        result["initial_answers"] = answer_stats(init_path)
        pooled: dict[str, dict[str, float]] = {g: {} for g in a.granularities}
        for r in runs:
            path = answers(a, str(r / "policy"), ev, r.name)
            sc = _scores(path)
            result["runs"][str(r)]["win_rate_vs_initial"] = win_rate(sc, init)
            result["runs"][str(r)]["answers"] = answer_stats(path)
            g = curve["runs"][str(r)]["granularity"]
            pooled[g].update({f"{r.name}/{k}": v for k, v in sc.items()})
        for g in a.granularities:
            init_rep = {k: init[k.split("/", 1)[1]] for k in pooled[g]}
            result["by_granularity"][g]["win_rate_vs_initial"] = win_rate(pooled[g], init_rep)
    (a.out / "study.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
