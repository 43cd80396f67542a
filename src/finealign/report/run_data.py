"""What a run folder holds, read for the report: stages and settings, evaluations, curves, win rates.

A run folder is what ``finealign run`` writes: ``run.json`` (recipe, scale, stage list) and one folder
per stage with its done-marker ``.finealign-stage.json`` (type, settings, seconds, summary). Folders
without ``run.json`` are scanned for stage markers one level down. Nothing here loads a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FinealignError
from ..data.run_markers import MARKER, RUN_FILE, STARTED, read_marker

# metric names per curve, most specific first (PPO, token RM, TRL's DPO/KTO logs)
CURVE_KEYS = {
    "loss": ("loss", "pg_loss", "policy_loss", "train_loss"),
    "reward": ("score", "rewards/margins", "rewards/chosen", "reward"),
    "KL": ("kl", "objective/kl"),
}


@dataclass
class Stage:
    """One stage folder: ``status`` is done | incomplete | not run."""

    run: str
    name: str
    type: str
    dir: Path
    status: str
    marker: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.run}/{self.name}"


@dataclass
class Run:
    name: str
    dir: Path
    scale: str
    description: str
    stages: list[Stage]


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
            if limit and len(rows) >= limit:
                break
    return rows


def load_run(run_dir: str | Path) -> Run:
    """The stages of one run folder, in recipe order. Raises ``FinealignError`` if it holds none."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FinealignError(f"{d}: no such run folder")
    meta = _json(d / RUN_FILE) or {}
    listed = meta.get("stages") or [{"name": p.name, "type": (read_marker(p) or {}).get("type", "?")}
                                    for p in sorted(d.iterdir()) if p.is_dir() and (p / MARKER).exists()]
    name = meta.get("recipe") or d.name
    stages = []
    for s in listed:
        sd = d / s["name"]
        m = read_marker(sd)
        status = "done" if m else ("incomplete" if (sd / STARTED).exists() else "not run")
        stages.append(Stage(name, s["name"], s.get("type") or (m or {}).get("type", "?"), sd, status, m or {}))
    if not stages:
        raise FinealignError(f"{d}: no stages found (expected run.json or stage folders with {MARKER}; "
                             "run `finealign run RECIPE --out DIR` first)")
    return Run(name, d, meta.get("scale", "?"), meta.get("description", ""), stages)


def reward_rows(runs: list[Run]) -> list[dict]:
    """Reward accuracy rows (eval-rm stages, token RM evals), each beside its length baseline."""
    rows = []
    for r in runs:
        for s in r.stages:
            if s.status != "done":
                continue
            if s.type == "eval-rm":
                res = _json(s.dir / "results.json") or {}
                sc = (res.get("metrics") or {}).get("scorer", {}).get("overall") or {}
                ln = (res.get("metrics") or {}).get("length", {}).get("overall") or {}
                rows.append({"stage": s.label, "scorer": res.get("scorer"), "benchmark": res.get("benchmark"),
                             "n": sc.get("n"), "metric": "pairwise accuracy" if "accuracy" in sc else "correlation",
                             "value": sc.get("accuracy", sc.get("pearson")), "ci": _ci(sc),
                             "length": ln.get("accuracy", ln.get("pearson")), "length_ci": _ci(ln)})
            elif s.type == "train-token-rm":
                ev = (_json(s.dir / "eval.json") or {}).get("eval")
                if ev:
                    rows.append({"stage": s.label, "scorer": "token RM (sum)", "benchmark": "held-out edits",
                                 "n": ev.get("n_pairs"), "metric": "pairwise accuracy", "value": ev.get("pairwise_acc"),
                                 "ci": None, "length": ev.get("length_acc"), "length_ci": None})
    return rows


def _ci(m: dict):
    for lo, hi in (("ci_low", "ci_high"), ("accuracy_ci_low", "accuracy_ci_high")):
        if lo in m and hi in m:
            return [m[lo], m[hi]]
    ci = m.get("ci") or m.get("accuracy_ci")
    return list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 else None


def winrate_rows(runs: list[Run]) -> list[dict]:
    """One row per finished win-rate stage: its ``results.json`` plus the stage label and folder."""
    rows = []
    for r in runs:
        for s in r.stages:
            if s.type == "eval-winrate" and s.status == "done":
                res = _json(s.dir / "results.json")
                if res:
                    rows.append({"stage": s.label, "dir": s.dir, **res})
    return rows


def curves(stage: Stage) -> dict[str, list[tuple[float, float]]]:
    """{"loss" | "reward" | "KL": [(step, value)]} from a training stage's logs (empty when none)."""
    if stage.type == "train-ppo" or stage.type == "train-token-rm":
        rows = [m for m in _jsonl(stage.dir / "metrics.jsonl") if m.get("event", "train") == "train"]
    elif (stage.dir / "finealign_train.json").exists():
        rows = (_json(stage.dir / "finealign_train.json") or {}).get("log_history") or []
    else:
        rows = []
    out: dict[str, list] = {}
    for name, keys in CURVE_KEYS.items():
        for k in keys:
            pts = [(float(m.get("step", i + 1)), float(m[k])) for i, m in enumerate(rows)
                   if isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)]
            if pts:
                out[f"{name} ({k})"] = pts
                break
    return out


def samples(row: dict, n: int) -> list[dict]:
    """The first ``n`` judged pairs of a win-rate stage (prompt, initial output, new output, credit)."""
    return _jsonl(Path(row["dir"]) / "pairs.jsonl", limit=n)
