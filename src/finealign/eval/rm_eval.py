"""Reward evaluation: score a benchmark's responses with any scorer, report accuracy / correlations.

Every benchmark is cut into *units* (one (prompt, response) to score): a pair gives two, a rating
one, a system output one. Units are keyed by a hash of their content, so a response shared by
several items (AlpacaEval's reference outputs) is scored once, and scores are cached in
``OUT/scores.jsonl`` (a ``JsonlAppender`` keyed by scorer spec + unit key): a killed run resumes
where it stopped. The length baseline ("longer response wins", characters of the full response) is
always computed on the same items and reported beside the scorer.

Pairs whose chosen and rejected are the same text are ties no scorer can order: they are left out
and counted (``skipped`` in ``results.json``). Empty responses are scored as they are (every scorer
handles them) and counted (``empty_responses``). The score cache is tied to each scorer's
fingerprint (``data.manifest``): a token RM retrained at the same path does not reuse the old
model's scores; ``overwrite`` empties it.

Outputs (written atomically): ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import Settings, positive, setting
from ..core import stats
from ..core.align import same_text
from ..data.io import write_json, write_text_atomic
from ..data.records import PairRecord, RatingRecord
from ..errors import FinealignError
from ..rewards.cache import Unit, score_units, unit  # noqa: F401 (Unit, score_units: re-exported)
from .benchmarks import Benchmark, load_benchmark


def _n_boot(v) -> str | None:
    return None if v >= 10 else f"must be at least 10, got {v}"


@dataclass(kw_only=True)
class EvalConfig(Settings):
    """One reward evaluation (the fields are flags of ``finealign eval-rm``): a scorer on a benchmark, next
    to the length baseline. The length baseline always sees the full responses."""

    scorer: str = setting(None, reads="scorer", short="-s", required=True,
                          help="Scorer spec, e.g. flr:smollm2-135m-instruct,mode=pmi | direct:MODEL | length.")
    benchmark: str = setting(None, reads="file", short="-b", required=True,
                             help="hh-harmless | alpaca-eval | prometheus-mt-bench | prometheus-vicuna | "
                                  "alpaca-eval-systems | a pair/rating FILE.")
    out: Path = setting(None, identity=False, short="-o", required=True,
                        help="Output folder: results.json, results.md, "
                             "scores.jsonl (the score cache; a rerun resumes).")
    limit: int | None = setting(None, short="-n", check=positive,
                                help="Evaluate N items (alpaca-eval-systems: N instructions x every system).")
    sample_seed: int | None = setting(None, help="Draw the N items with this seed instead of taking the first N.")
    max_chars: int | None = setting(None, check=positive, help="Cut responses to this many characters before "
                                                               "scoring (CPU budgets).")
    batch_size: int = setting(8, identity=False, check=positive, help="Responses per scorer call.")
    n_boot: int = setting(1000, identity="derived", check=_n_boot, help="Bootstrap resamples for the 95% intervals.")
    seed: int = setting(0, identity="derived", help="Bootstrap seed.")
    data_dir: Path | None = setting(None, help="Shared data folder (built-in benchmarks).")
    overwrite: bool = setting(False, identity=False,
                              help="Empty the score cache (and the results) first (a scorer whose model "
                                   "changed since its scores were cached is refused without it).")


def item_units(bench: Benchmark, max_chars: int | None = None) -> list[list[Unit]]:
    """Per item, its units: ``[chosen, rejected]`` for a pair, ``[response]`` otherwise."""
    out = []
    for r in bench.items:
        if isinstance(r, PairRecord):
            out.append([unit(r.prompt, r.chosen, max_chars), unit(r.prompt, r.rejected, max_chars)])
        elif isinstance(r, RatingRecord):
            out.append([unit(r.prompt, r.response, max_chars)])
        else:
            out.append([unit(r.prompt, r.completion, max_chars)])
    return out


def _pair_metrics(c: list[float], r: list[float], p: list[float | None], cfg_seed: int, n_boot: int) -> dict:
    acc = stats.accuracy_with_ci(c, r, p, n_boot=n_boot, seed=cfg_seed)
    m = stats.margins(c, r, p)
    m = m[~np.isnan(m)]
    return {"accuracy": acc.accuracy, "ci_low": acc.low, "ci_high": acc.high, "n": acc.n, "ties": acc.ties,
            "mean_margin": float(m.mean()) if m.size else math.nan}


def _corr_metrics(x: list[float], y: list[float], seed: int, n_boot: int) -> dict:
    c = stats.correlations(x, y)
    xy = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)]) if x else np.zeros((0, 2))
    lo, hi = stats.bootstrap_ci(xy, lambda a: stats.spearman(a[:, 0], a[:, 1]), n_boot=n_boot, seed=seed)
    return {"pearson": c.pearson, "spearman": c.spearman, "kendall": c.kendall, "n": c.n,
            "spearman_ci_low": lo, "spearman_ci_high": hi}


def compute_metrics(bench: Benchmark, score_of: Callable[[int, int], float], *, seed: int = 0,
                    n_boot: int = 1000) -> dict:
    """Metrics of one scorer. ``score_of(i, j)`` is the score of unit ``j`` of item ``i``.

    pairs: overall and by-subset accuracy; ratings: overall and by-subset correlations; systems: mean
    score per system and its correlations with the leaderboard.
    """
    items = bench.items
    if bench.kind == "pairs":
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(items):
            groups[r.subset or "all"].append(i)

        def pm(idx):
            return _pair_metrics([score_of(i, 0) for i in idx], [score_of(i, 1) for i in idx],
                                 [items[i].p_chosen for i in idx], seed, n_boot)

        return {"overall": pm(range(len(items))),
                "by_subset": {k: pm(v) for k, v in sorted(groups.items())} if len(groups) > 1 else {}}
    if bench.kind == "ratings":
        groups = defaultdict(list)
        for i, r in enumerate(items):
            groups[r.subset or "all"].append(i)

        def cm(idx):
            return _corr_metrics([score_of(i, 0) for i in idx], [items[i].score for i in idx], seed, n_boot)

        return {"overall": cm(range(len(items))),
                "by_subset": {k: cm(v) for k, v in sorted(groups.items())} if len(groups) > 1 else {}}
    per: dict[str, list[float]] = defaultdict(list)
    for i, r in enumerate(items):
        per[r.meta["system"]].append(score_of(i, 0))
    systems = sorted(per)
    means = [float(np.mean(per[s])) for s in systems]
    board = [bench.leaderboard[s] for s in systems]
    overall = _corr_metrics(means, board, seed, n_boot)
    overall["n_systems"] = len(systems)
    return {"overall": overall, "by_subset": {},
            "systems": [{"system": s, "mean_score": m, "win_rate": w, "n": len(per[s])}
                        for s, m, w in zip(systems, means, board)]}


# ----------------------------------------------------------------------------------------- running


@dataclass
class EvalResult:
    """What ``run_eval`` measured; ``to_json()`` is ``results.json``."""

    config: EvalConfig
    bench: Benchmark
    scorer: dict
    length: dict
    units: int
    scored_now: int
    seconds: float
    paths: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        c = self.config
        return {"benchmark": self.bench.name, "kind": self.bench.kind, "scorer": c.scorer,
                "items": len(self.bench.items), "items_available": self.bench.total, "limit": c.limit,
                "sample_seed": c.sample_seed, "max_chars": c.max_chars, "distinct_responses": self.units,
                "scored_this_run": self.scored_now, "seconds_this_run": round(self.seconds, 2),
                "skipped": self.bench.skipped, "empty_responses": empty_responses(self.bench),
                "bootstrap": {"n_boot": c.n_boot, "seed": c.seed, "level": 0.95},
                "metrics": {"scorer": self.scorer, "length": self.length}}


def run_eval(cfg: EvalConfig, *, scorer=None, bench: Benchmark | None = None,
             on_total: Callable[[int], None] | None = None,
             on_progress: Callable[[int], None] | None = None) -> EvalResult:
    """Load the benchmark and the scorer, score (resuming from the cache), compute, write JSON + markdown."""
    from ..rewards import load_scorer
    from ..rewards.base import LengthScorer

    from ..data.manifest import prepare_output
    from ..rewards.base import scorer_fingerprint

    bench = bench or load_benchmark(cfg.benchmark, limit=cfg.limit, sample_seed=cfg.sample_seed, data_dir=cfg.data_dir)
    bench = drop_identical_pairs(bench)
    if not bench.items:
        raise FinealignError(f"benchmark {bench.name}: no items")
    per_item = item_units(bench, cfg.max_chars)
    flat = [u for us in per_item for u in us]
    distinct = len({u.key for u in flat})
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "scores.jsonl"
    spec = cfg.scorer
    # the cache is tied to each scorer's fingerprint: checked before the scorer is loaded
    prepare_output(cache, "score-cache", {spec: scorer_fingerprint(spec)}, merge=True, overwrite=cfg.overwrite,
                   side_files=[out / "results.json", out / "results.md"])
    scorer_obj = load_scorer(scorer if scorer is not None else cfg.scorer)
    done_before = _cached_count(cache, spec, {u.key for u in flat})
    if on_total:
        on_total(distinct - done_before)
    t0 = time.perf_counter()
    scores = score_units(scorer_obj, spec, flat, cache, batch_size=cfg.batch_size, on_progress=on_progress)
    seconds = time.perf_counter() - t0
    full = item_units(bench, None)  # the length baseline sees the full responses
    length = LengthScorer()
    m_scorer = compute_metrics(bench, lambda i, j: scores[per_item[i][j].key], seed=cfg.seed, n_boot=cfg.n_boot)
    m_length = compute_metrics(bench, lambda i, j: length.score([full[i][j].prompt], [full[i][j].response])[0],
                               seed=cfg.seed, n_boot=cfg.n_boot)
    res = EvalResult(cfg, bench, m_scorer, m_length, distinct, distinct - done_before, seconds)
    res.paths = {"json": str(out / "results.json"), "markdown": str(out / "results.md"), "cache": str(cache)}
    write_json(out / "results.json", res.to_json())
    write_text_atomic(out / "results.md", markdown(res.to_json()))
    return res


def drop_identical_pairs(bench: Benchmark) -> Benchmark:
    """``bench`` without the pairs whose chosen and rejected are the same text (``core.align.same_text``):
    ties that no scorer can order, counted under ``skipped``."""
    if bench.kind != "pairs":
        return bench
    keep = [r for r in bench.items if not same_text(r.chosen, r.rejected)]
    n = len(bench.items) - len(keep)
    if not n:
        return bench
    return dataclasses.replace(bench, items=keep, skipped={**bench.skipped, IDENTICAL: n})


IDENTICAL = "identical chosen and rejected (ties)"


def empty_responses(bench: Benchmark) -> int:
    """Responses of ``bench`` that are empty (scored as they are)."""
    n = 0
    for r in bench.items:
        texts = [r.chosen, r.rejected] if isinstance(r, PairRecord) else [
            r.response if isinstance(r, RatingRecord) else r.completion]
        n += sum(not t.strip() for t in texts)
    return n


def _cached_count(cache: Path, spec: str, keys: set[str]) -> int:
    if not cache.exists():
        return 0
    seen = set()
    for line in cache.read_text(encoding="utf-8").splitlines():
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if isinstance(o, dict) and o.get("scorer") == spec and o.get("key") in keys:
            seen.add(o["key"])
    return len(seen)


# ---------------------------------------------------------------------------------------- markdown


def _f(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _acc_cell(m: dict) -> str:
    return f"{_f(m['accuracy'])} [{_f(m['ci_low'])}, {_f(m['ci_high'])}]"


def _corr_cell(m: dict) -> str:
    return f"{_f(m['pearson'])} / {_f(m['spearman'])} / {_f(m['kendall'])}"


def markdown(res: dict) -> str:
    """A markdown table of ``results.json``: the scorer beside the length baseline, overall and by subset."""
    s, ln = res["metrics"]["scorer"], res["metrics"]["length"]
    size = (f"{res['items']} responses: {res['items_available'] if res['limit'] is None else min(res['limit'], res['items_available'])}"
            f" instructions x {len(s.get('systems', []))} systems" if res["kind"] == "systems"
            else f"{res['items']} of {res['items_available']} items")
    head = (f"### {res['benchmark']} ({res['kind']}, {size})\n\n"
            f"scorer: `{res['scorer']}`; baseline: length (longer response wins)"
            + (f"; responses cut at {res['max_chars']} characters for the scorer" if res.get("max_chars") else "")
            + "\n\n")
    rows = [("overall", s["overall"], ln["overall"])] + [
        (k, s["by_subset"][k], ln["by_subset"][k]) for k in s["by_subset"]]
    if res["kind"] == "pairs":
        lines = ["| subset | n | scorer accuracy [95% CI] | length accuracy [95% CI] | scorer ties |",
                 "|---|---:|---|---|---:|"]
        lines += [f"| {k} | {a['n']} | {_acc_cell(a)} | {_acc_cell(b)} | {a['ties']} |" for k, a, b in rows]
    else:
        label = "systems" if res["kind"] == "systems" else "subset"
        n_key = "n_systems" if res["kind"] == "systems" else "n"
        lines = [f"| {label} | n | scorer Pearson / Spearman / Kendall | Spearman 95% CI | "
                 "length Pearson / Spearman / Kendall |", "|---|---:|---|---|---|"]
        lines += [f"| {k} | {a.get(n_key, a['n'])} | {_corr_cell(a)} | [{_f(a['spearman_ci_low'])}, "
                  f"{_f(a['spearman_ci_high'])}] | {_corr_cell(b)} |" for k, a, b in rows]
    if res["kind"] == "systems":
        lines += ["", "| system | responses | mean score | mean length | leaderboard win rate |", "|---|---:|---:|---:|---:|"]
        lens = {d["system"]: d["mean_score"] for d in ln.get("systems", [])}
        lines += [f"| {d['system']} | {d['n']} | {_f(d['mean_score'], 4)} | {_f(lens.get(d['system']), 0)} | "
                  f"{_f(d['win_rate'], 2)} |" for d in sorted(s["systems"], key=lambda d: -d["win_rate"])]
    notes = [f"left out: {n} {why}" for why, n in sorted((res.get("skipped") or {}).items()) if n]
    if res.get("empty_responses"):
        notes.append(f"empty responses scored as they are: {res['empty_responses']}")
    return head + "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")
