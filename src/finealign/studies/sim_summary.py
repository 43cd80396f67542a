"""The summaries of the sim study (``finealign.pipeline.sim_study``): reward sources over seeds
(``summarize_rm``) and PPO runs per task and reward (``summarize_ppo``): steps to a target with intervals over
seeds, the token/sequence ratio with its bootstrap interval, final gold, KL, length and the
over-optimisation flag. Pure functions of the runs' logged curves (no torch)."""

from __future__ import annotations

import math
import statistics

from ..core.stats import bootstrap_ci, ratio_of_means_ci
from .sim_plots import moving

__all__ = ["mean_curve", "steps_ratio", "summarize_ppo", "summarize_rm"]


def _eval_mean(xs: list[dict], split: str) -> dict | None:
    """Mean and min/max over seeds of the final policies' gold score on ``split`` (None when not evaluated)."""
    v = [x["eval"][split]["gold"] for x in xs if x.get("eval") and split in x["eval"]]
    return {"mean": statistics.fmean(v), "range": [min(v), max(v)]} if v else None


def _final(r: dict, key: str = "gold") -> float:
    """Mean of ``key`` over a run's last 3 logged steps."""
    return statistics.fmean(o[key] for o in r["curve"][-3:])


def _run_row(r: dict, init: float, target: float | None) -> dict:
    """One PPO run's summary: final gold (last 3 steps), gain over ``init``, steps to ``target`` (the first step
    after step 1 whose 3-step moving average reaches it, counted only when the run ends at or above it; a run
    that touched it and ended below is ``lost``), final KL and response length, and the over-optimisation flag
    (proxy up and gold down from the first to the last third)."""
    g = r["curve"]
    third = max(1, len(g) // 3)
    gold_ma = moving([o["gold"] for o in g])
    # step 1's rollouts come from the initial policy: only steps after an update can reach the target
    touched = None if target is None else next((o["step"] for o, m in zip(g, gold_ma)
                                                if o["step"] > 1 and m >= target), None)
    reach = touched if touched is not None and _final(r) >= target else None
    first, last = g[:third], g[-third:]
    over = (statistics.fmean(o["proxy"] for o in last) > statistics.fmean(o["proxy"] for o in first)
            and statistics.fmean(o["gold"] for o in last) < statistics.fmean(o["gold"] for o in first))
    lengths = [o["response_length"] for o in g[-3:] if o.get("response_length") is not None]
    return {"seed": r["seed"], "final_gold": _final(r), "gain": _final(r) - init, "steps_to_target": reach,
            "lost": touched is not None and reach is None, "steps": len(g),
            "final_kl": _final(r, "kl"), "final_length": statistics.fmean(lengths) if lengths else None,
            "over_optimised": over, "eval": r.get("final_eval")}


def _interval(values: list[float]) -> list[float] | None:
    """95% percentile-bootstrap interval of the mean over seeds (None for fewer than 2 values)."""
    lo, hi = bootstrap_ci(values)
    return None if math.isnan(lo) else [lo, hi]


def _group(xs: list[dict]) -> dict:
    """The summary of one (reward, granularity) over its seeds ``xs`` (``_run_row``'s)."""
    steps = [x["steps_to_target"] for x in xs if x["steps_to_target"] is not None]
    lost = sum(x["lost"] for x in xs)
    lengths = [x["final_length"] for x in xs if x["final_length"] is not None]
    return {"runs": xs, "final_gold": statistics.fmean(x["final_gold"] for x in xs),
            "final_gold_ci": _interval([x["final_gold"] for x in xs]),
            "gain": statistics.fmean(x["gain"] for x in xs),
            "reached": f"{len(steps)} of {len(xs)}" + (f" ({lost} touched it, ended below)" if lost else ""),
            "mean_steps_to_target": statistics.fmean(steps) if steps else None,
            "steps_range": [min(steps), max(steps)] if steps else None,
            "final_kl": statistics.fmean(x["final_kl"] for x in xs),
            "final_length": statistics.fmean(lengths) if lengths else None,
            "over_optimised": sum(x["over_optimised"] for x in xs),
            "final_policy_gold": {sp: _eval_mean(xs, sp) for sp in ("train", "heldout")}}


def steps_ratio(token: list[dict], sequence: list[dict]) -> dict | None:
    """Sequence-level over token-level steps to the target (> 1: token level is faster), one value per seed,
    with a 95% bootstrap interval (``core.stats.ratio_of_means_ci``). A run that never reached the target
    counts as its length + 1 steps, a lower bound of its true steps (``censored`` names the side: a censored
    sequence side makes the ratio a lower bound, a censored token side an upper bound). None when no run of
    either side reached the target.

    Worked: token steps [4, 6], sequence [8, 12] -> 10 / 5 = 2.0; token [4, unreached in 60 steps] and
    sequence [8, 12] -> 10 / ((4 + 61) / 2) = 0.31 with the token side censored."""
    def steps(xs):
        return [x["steps_to_target"] or x["steps"] + 1 for x in xs]

    if not any(x["steps_to_target"] for x in token + sequence):
        return None
    ratio, lo, hi = ratio_of_means_ci(steps(sequence), steps(token))
    censored = [side for side, xs in (("token", token), ("sequence", sequence))
                if any(x["steps_to_target"] is None for x in xs)]
    return {"ratio": ratio, "ci": None if math.isnan(lo) else [lo, hi], "censored": censored,
            "seeds": [len(token), len(sequence)]}


def _initial_gold(runs: list[dict]) -> float:
    """The initial policy's gold: step 1's gold (rollouts of the initial policy) averaged within each seed, then
    over seeds, over the gold-reward runs (all runs where there are none). So the target of a task depends on
    its gold runs only, not on how many learned-reward runs share a seed."""
    gold = [r for r in runs if r["reward"] == "gold"] or runs
    per_seed: dict = {}
    for r in gold:
        per_seed.setdefault(r["seed"], []).append(r["curve"][0]["gold"])
    return statistics.fmean(statistics.fmean(v) for v in per_seed.values())


def summarize_ppo(runs: list[dict], frac: float, initial_eval: dict | None = None) -> dict:
    """Per task: initial gold, target, and per (reward, granularity) the finals, steps to target, KL, flags.

    The target is ``frac`` of the gap from the initial gold (``_initial_gold``: step 1, seed by seed) to the best gold-reward
    granularity's final gold. ``speedup_token_over_sequence``: the ratio of mean steps, with its range over the
    seeds' extremes, when every run of both reached the target; ``steps_ratio`` (every reward with both
    granularities): the censored ratio with a bootstrap interval. ``initial_eval``: per task, ``policy_gold`` of
    the initial policy (reported beside the final policies')."""
    out = {}
    for task in sorted({r["task"] for r in runs}):
        rs = [r for r in runs if r["task"] == task and r["curve"]]
        init = _initial_gold(rs)
        golds = [statistics.fmean(_final(r) for r in rs if r["reward"] == "gold" and r["granularity"] == g)
                 for g in {r["granularity"] for r in rs if r["reward"] == "gold"}]
        best = max(golds) if golds else None
        target = None if best is None or best <= init else init + frac * (best - init)
        groups: dict = {}
        for r in rs:
            groups.setdefault(f"{r['reward']}/{r['granularity']}", []).append(_run_row(r, init, target))
        summary = {key: _group(xs) for key, xs in groups.items()}
        ratios, censored = {}, {}
        for key in sorted({k.split("/")[0] for k in summary}):
            tok, seq = summary.get(f"{key}/token"), summary.get(f"{key}/sequence")
            if not (tok and seq):
                continue
            if (c := steps_ratio(tok["runs"], seq["runs"])) is not None:
                censored[key] = c
            # every seed of both must have reached it: a mean over the seeds that did would drop the slowest
            if all(x["steps_to_target"] for x in tok["runs"] + seq["runs"]):
                (tl, th), (sl, sh) = tok["steps_range"], seq["steps_range"]
                ratios[key] = {"ratio": seq["mean_steps_to_target"] / tok["mean_steps_to_target"],
                               "range": [sl / th, sh / tl], "ci": censored[key]["ci"],
                               "reached": [tok["reached"], seq["reached"]]}
        if not ratios:
            ratios["note"] = ("no gold-reward run improved on the first batch" if target is None
                              else "not every token and sequence run reached the target")
        out[task] = {"initial_gold": init, "gold_run_final": best, "target": target, "by_run": summary,
                     "initial_policy_gold": (initial_eval or {}).get(task),
                     "speedup_token_over_sequence": ratios, "steps_ratio": censored}
    return out


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
        if any("curve" in r for r in rs):
            row["curve"] = mean_curve([r.get("curve", []) for r in rs])
        out.append(row)
    return out


def mean_curve(curves: list[list[dict]]) -> list[dict]:
    """The seeds' learning curves (``sim_curve.curve_points``' points) averaged per step, over the steps every seed
    has; a measure that is None for a seed is averaged over the others (None when it is None for all).

    Worked: seed curves [{step 10, auroc 0.6}, {step 20, auroc 0.7}] and [{step 20, auroc 0.8}] -> [{step 20,
    auroc 0.75, seeds 2}]."""
    steps = sorted(set.intersection(*[{p["step"] for p in c} for c in curves])) if curves else []
    out = []
    for s in steps:
        pts = [next(p for p in c if p["step"] == s) for c in curves]
        point = {"step": s, "seeds": len(pts)}
        for k in pts[0]:
            if k != "step":
                v = [p[k] for p in pts if p.get(k) is not None and not math.isnan(p[k])]
                point[k] = statistics.fmean(v) if v else None
        out.append(point)
    return out
