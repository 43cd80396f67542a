"""Reward and KL curves of PPO runs (token vs sequence granularity), and steps to a target score.

Reads ``metrics.jsonl`` of each run folder, groups runs by their ``granularity`` (from
``config.yaml``), plots mean score and KL per step (one line per run, thin; group mean, thick) to a
PNG, and prints one JSON object: per run the first step whose score reaches ``--target`` (a
moving average over ``--window`` steps), the mean score of the first and last ``--window`` steps,
and the final KL.

    python benchmarks/ppo_curves.py runs/ppo_tok_s0 runs/ppo_seq_s0 --target 0.5 --png docs/ppo_curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def load(run: Path) -> tuple[str, list[dict]]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return cfg["granularity"], [r for r in rows if "score" in r]


def moving(xs: list[float], w: int) -> list[float]:
    return [sum(xs[max(0, i - w + 1): i + 1]) / len(xs[max(0, i - w + 1): i + 1]) for i in range(len(xs))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--target", type=float, required=True, help="score (reward model's part) to reach")
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--png", type=Path, default=None)
    a = ap.parse_args()
    out = {"target": a.target, "window": a.window, "runs": {}}
    curves = []
    for run in a.runs:
        gran, rows = load(run)
        steps = [r["step"] for r in rows]
        score = [r["score"] for r in rows]
        kl = [r["kl"] for r in rows]
        ma = moving(score, a.window)
        hit = next((s for s, v in zip(steps, ma) if v >= a.target), None)
        out["runs"][str(run)] = {"granularity": gran, "steps": len(rows), "steps_to_target": hit,
                                 "score_first": round(sum(score[:a.window]) / len(score[:a.window]), 4),
                                 "score_last": round(sum(score[-a.window:]) / len(score[-a.window:]), 4),
                                 "kl_last": round(kl[-1], 4)}
        curves.append((run.name, gran, steps, score, kl))
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80)
        colors = {"token": "tab:blue", "sequence": "tab:orange"}
        for name, gran, steps, score, kl in curves:
            ax1.plot(steps, moving(score, a.window), color=colors[gran], alpha=0.35, lw=0.8)
            ax2.plot(steps, kl, color=colors[gran], alpha=0.35, lw=0.8)
        for gran in colors:  # group mean over runs (seeds), thick
            group = [c for c in curves if c[1] == gran]
            if not group:
                continue
            n = min(len(c[2]) for c in group)
            steps = group[0][2][:n]
            mean_score = [sum(c[3][i] for c in group) / len(group) for i in range(n)]
            mean_kl = [sum(c[4][i] for c in group) / len(group) for i in range(n)]
            ax1.plot(steps, moving(mean_score, a.window), color=colors[gran], lw=2.2, label=f"{gran} (mean of {len(group)})")
            ax2.plot(steps, mean_kl, color=colors[gran], lw=2.2, label=f"{gran} (mean of {len(group)})")
        ax1.axhline(a.target, color="gray", ls=":", lw=1)
        ax1.set(title=f"reward-model score (moving avg {a.window})", xlabel="PPO step")
        ax2.set(title="KL to reference (per sequence)", xlabel="PPO step")
        ax1.legend(fontsize=7)
        fig.tight_layout()
        a.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(a.png)
        out["png"] = str(a.png)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
