"""Learning curves of the sim study's token RMs (``finealign sim study --rm-curve STEP...``).

A token RM trains once, to ``--rm-steps``; after each curve step its in-memory weights are measured on the
held-out sets (``sim.evaluate.evaluate_reward``, the metrics of the final evaluation) and the point is kept in
``OUT/.../sim_curve.json`` (``sim_curve_pool-mean.json`` for ``--rm-pool mean``), so an interrupted training
that resumes keeps the points it measured. The last point of the curve is the row's own final evaluation.
Each point also carries the mean training loss since the previous point (from the run's ``metrics.jsonl``),
so a plateau of the held-out measures can be read beside the training loss.

The weights at step s of a 400-step run are not those of a 24-step run: the learning rate decays over the
whole run (``linear``). The curve says whether longer training still helps, not what a shorter budget gives.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from ..data.io import iter_objects, write_json

__all__ = ["CURVE_KEYS", "curve_log_every", "curve_path", "curve_points", "curve_probe", "window_losses"]

# the held-out measures each point keeps (``sim.evaluate.evaluate_reward``'s keys)
CURVE_KEYS = ("token_auroc", "pair_acc", "pair_acc_length_balanced", "edit_acc")


def curve_log_every(rm_steps: int, curve: list[int]) -> int:
    """The training's logging cadence: every curve step and ``rm_steps`` end a logged window (their greatest
    common divisor), or a quarter of the run without a curve. Worked: steps 100, curve [24, 50] -> gcd 2."""
    return math.gcd(rm_steps, *curve) if curve else max(1, rm_steps // 4)


def curve_path(eval_file: Path) -> Path:
    """The curve file beside the source's evaluation file (``sim_eval*.json`` -> ``sim_curve*.json``)."""
    return eval_file.with_name(eval_file.name.replace("sim_eval", "sim_curve"))


def curve_probe(task, heldout: Path, path: Path, pool: str, limit: int):
    """A ``train_token_rm`` probe: measures the model of a step on ``heldout`` (the sim ``task``'s held-out
    folder) with the ``pool`` the study scores by, and stores the point in ``path`` (temporary file + rename)."""
    from ..rewards.token_rm import TokenRMScorer
    from ..sim.evaluate import evaluate_reward

    def probe(step: int, model, tokenizer) -> None:
        scorer = TokenRMScorer(str(path.parent), pool=pool, model=model, tokenizer=tokenizer)
        ev = evaluate_reward(scorer, task, heldout, limit=limit)
        points = json.loads(path.read_text()) if path.exists() else {}
        points[str(step)] = {k: ev[k] for k in CURVE_KEYS}
        write_json(path, dict(sorted(points.items(), key=lambda kv: int(kv[0]))))
        print(f"  curve {path.parent.name} step {step}: auroc {ev['token_auroc']} pair {ev['pair_acc']} "
              f"(length-balanced {ev['pair_acc_length_balanced']})", file=sys.stderr)

    return probe


def window_losses(events: list[dict], steps: list[int]) -> dict[int, float | None]:
    """Mean training loss between consecutive curve ``steps``: for step s, the mean of the logged ``train``
    events' losses with previous step < event step <= s (None when no event falls there). Each event's loss is
    already its own window's mean (``train.token_rm``), and ``curve_log_every`` makes the windows nest.

    Worked: events at steps 2, 4, 6 with losses 0.9, 0.7, 0.4 and steps [4, 6] -> {4: (0.9 + 0.7) / 2 = 0.8,
    6: 0.4}."""
    out, prev = {}, 0
    for s in sorted(steps):
        ls = [e["loss"] for e in events if e.get("event") == "train" and prev < e["step"] <= s]
        out[s], prev = (statistics.fmean(ls) if ls else None), s
    return out


def curve_points(eval_file: Path, final: dict, rm_steps: int, curve: list[int]) -> dict:
    """The learning curve of the source evaluated in ``eval_file``: ``{"points": [{step, train_loss, token_auroc,
    pair_acc, pair_acc_length_balanced, edit_acc}, ...], "missing": [steps]}``, the curve steps measured during
    training, then ``rm_steps`` from ``final`` (the row's own evaluation). ``missing`` names the curve steps
    without a point (the model was trained before they were asked for: give the study another ``--out``)."""
    path = curve_path(eval_file)
    stored = json.loads(path.read_text()) if path.exists() else {}
    metrics = eval_file.parent / "metrics.jsonl"
    events = [o for _, o in iter_objects(metrics)] if metrics.exists() else []
    have = sorted(s for s in curve if str(s) in stored)
    losses = window_losses(events, [*have, rm_steps])
    points = [{"step": s, "train_loss": losses[s], **stored[str(s)]} for s in have]
    points.append({"step": rm_steps, "train_loss": losses[rm_steps], **{k: final.get(k) for k in CURVE_KEYS}})
    return {"points": points, "missing": sorted(set(curve) - set(have))}
