"""Reward benchmarks: built-in names for the shared data sets, or any pair / rating file.

=======================  =======  ==========================================================
name                     kind     what is measured
=======================  =======  ==========================================================
``hh-harmless``          pairs    HH-RLHF harmless-base test: accuracy vs human preference
``alpaca-eval``          pairs    AlpacaEval 2 GPT-4-turbo judgments (soft labels): accuracy
                                  against the majority side, by evaluated system (subset)
``prometheus-mt-bench``  ratings  MT-Bench responses, mean of 3 GPT-4 scores: correlations
``prometheus-vicuna``    ratings  Vicuna-Bench responses, mean of 3 GPT-4 scores: correlations
``alpaca-eval-systems``  systems  every system's AlpacaEval outputs scored, mean per system,
                                  Spearman / Kendall against the AlpacaEval 2 leaderboard
FILE                     pairs    a file of ``prompt/chosen/rejected`` (+ ``subset``, ``p_chosen``)
FILE                     ratings  a file of ``prompt/response/score`` (+ ``subset``)
=======================  =======  ==========================================================

``limit`` keeps the first N items, or N items drawn with ``sample_seed`` (the first N of one seeded
permutation, so a larger N extends a smaller one and the score cache is reused); for
``alpaca-eval-systems`` N counts instructions, with every system's output on them.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..data.records import PairRecord, RatingRecord, Record, ResponseRecord
from ..errors import DataError, FinealignError

BUILTIN = {
    "hh-harmless": ("pairs", "hh-harmless"),
    "alpaca-eval": ("pairs", "alpaca-eval"),
    "prometheus-mt-bench": ("ratings", "prometheus-mt-bench"),
    "prometheus-vicuna": ("ratings", "prometheus-vicuna"),
    "alpaca-eval-systems": ("systems", "alpaca-eval-outputs"),
}
KINDS = ("pairs", "ratings", "systems")


@dataclass(frozen=True)
class Benchmark:
    """Items of one benchmark: ``PairRecord`` (pairs), ``RatingRecord`` (ratings) or ``ResponseRecord``
    with ``meta["system"]`` (systems; ``leaderboard`` maps system -> win rate in percent)."""

    name: str
    kind: str
    items: list[Record]
    total: int  # items before ``limit``
    leaderboard: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"benchmark kind must be one of {KINDS}, got {self.kind!r}")


def take(items: list, limit: int | None, sample_seed: int | None = None) -> list:
    """The first ``limit`` items, or ``limit`` items drawn with ``sample_seed`` (kept in their order)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise FinealignError(f"--limit must be at least 1, got {limit}")
    if sample_seed is None:
        return list(items[:limit])
    order = list(range(len(items)))
    random.Random(sample_seed).shuffle(order)  # a prefix of one permutation: N items are nested in N' > N
    return [items[i] for i in sorted(order[:limit])]


def _systems(name: str, data_dir: str | Path | None, limit: int | None, sample_seed: int | None) -> Benchmark:
    from ..data.adapters import alpaca_eval_leaderboard, dataset_path, load_dataset

    records = load_dataset("alpaca-eval-outputs", dataset_path("alpaca-eval-outputs", data_dir) if data_dir else None)
    board = alpaca_eval_leaderboard(data_dir)
    skipped: Counter = Counter()
    kept = []
    for r in records:
        system = r.meta.get("system")
        if system not in board:
            skipped["system not on the leaderboard"] += 1
        elif not r.completion.strip():
            skipped["empty output"] += 1
        else:
            kept.append(r)
    prompt_ids = sorted({r.prompt_id for r in kept}, key=lambda p: (len(p), p))
    chosen = set(take(prompt_ids, limit, sample_seed))
    items = [r for r in kept if r.prompt_id in chosen]
    systems = sorted({r.meta["system"] for r in items})
    if len(systems) < 2:
        raise FinealignError(f"{name}: fewer than 2 systems with outputs on the leaderboard")
    return Benchmark(name, "systems", items, total=len(prompt_ids),
                     leaderboard={s: board[s] for s in systems}, skipped=dict(skipped))


def load_benchmark(name: str | Path, *, limit: int | None = None, sample_seed: int | None = None,
                   data_dir: str | Path | None = None) -> Benchmark:
    """A built-in benchmark by name (``BUILTIN``), or a pair / rating file at ``name``.

    ``data_dir`` overrides the shared data folder for built-in names.
    """
    key = str(name)
    if key in BUILTIN:
        kind, dataset = BUILTIN[key]
        if kind == "systems":
            return _systems(key, data_dir, limit, sample_seed)
        from ..data.adapters import convert_dataset

        loaded = convert_dataset(dataset, data_dir)
        items = loaded.records
        return Benchmark(key, kind, take(items, limit, sample_seed), total=len(items), skipped=dict(loaded.skipped))
    path = Path(key).expanduser()
    if not path.exists():
        raise FinealignError(f"unknown benchmark {key!r}: not a file and not one of {', '.join(BUILTIN)}")
    from ..data.io import read_records

    items = read_records(path)
    if not items:
        raise DataError(path, None, None, "no records")
    if isinstance(items[0], PairRecord):
        kind = "pairs"
    elif isinstance(items[0], RatingRecord):
        kind = "ratings"
    else:
        raise DataError(path, 1, None, f"a benchmark file holds pairs (prompt/chosen/rejected) or ratings "
                                       f"(prompt/response/score), not {items[0].kind} records")
    return Benchmark(path.name, kind, take(items, limit, sample_seed), total=len(items))


def is_system_item(r: Record) -> bool:
    return isinstance(r, ResponseRecord) and "system" in r.meta
