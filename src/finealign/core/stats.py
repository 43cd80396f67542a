"""Pure statistics for reward evaluation (no models, no I/O).

Notation: N items (pairs, ratings or systems).

* ``pair_credit(chosen, rejected, p_chosen)``: per pair, 1 if the scorer agrees with the label,
  0 if it disagrees, 1/2 on a tie. With a soft label ``p_chosen`` (the probability that
  ``chosen`` is better) the label is the *majority* side: ``chosen`` when ``p_chosen > 0.5``,
  ``rejected`` when ``p_chosen < 0.5``; ``p_chosen == 0.5`` has no majority and gets NaN (left out).
* ``pairwise_accuracy``: mean credit over the pairs that have a majority side.
* ``bootstrap_ci``: percentile bootstrap interval of a statistic, resampling items with a seed.
* ``correlations``: Pearson, Spearman and Kendall (tau-b) between scores and ratings.
* ``margins``: ``chosen - rejected`` score differences, signed toward the majority side.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np

__all__ = ["AccuracyCI", "Correlations", "accuracy_with_ci", "bootstrap_ci", "correlations", "margins",
           "pair_credit", "pairwise_accuracy", "ratio_of_means_ci"]


class AccuracyCI(NamedTuple):
    """Pairwise accuracy over ``n`` pairs with a bootstrap interval ``[low, high]``; ``ties``: pairs scored equal."""

    accuracy: float
    low: float
    high: float
    n: int
    ties: int


class Correlations(NamedTuple):
    """Correlations of ``n`` (score, rating) points; NaN when undefined (n < 2 or a constant side)."""

    pearson: float
    spearman: float
    kendall: float
    n: int


def _as_array(x: Sequence[float], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _side(p_chosen: Sequence[float | None] | None, n: int) -> np.ndarray:
    """(N,) +1 where chosen is the majority side, -1 where rejected is, 0 where there is no majority."""
    if p_chosen is None:
        return np.ones(n)
    p = np.asarray([1.0 if v is None else v for v in p_chosen], dtype=np.float64)
    if p.shape != (n,):
        raise ValueError(f"p_chosen has {p.size} values for {n} pairs")
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("p_chosen must be probabilities in [0, 1]")
    return np.sign(p - 0.5)


def margins(chosen: Sequence[float], rejected: Sequence[float],
            p_chosen: Sequence[float | None] | None = None) -> np.ndarray:
    """(N,) score margins ``chosen - rejected``, sign-flipped where the majority prefers ``rejected``
    (so positive = the scorer agrees with the label); NaN where there is no majority."""
    c, r = _as_array(chosen, "chosen"), _as_array(rejected, "rejected")
    if c.shape != r.shape:
        raise ValueError(f"chosen and rejected differ in length: {c.size} vs {r.size}")
    side = _side(p_chosen, c.size)
    m = (c - r) * side
    m[side == 0] = np.nan
    return m


def pair_credit(chosen: Sequence[float], rejected: Sequence[float],
                p_chosen: Sequence[float | None] | None = None) -> np.ndarray:
    """(N,) credit per pair: 1 agree, 0 disagree, 0.5 tie; NaN where the label has no majority side."""
    m = margins(chosen, rejected, p_chosen)
    credit = np.where(m > 0, 1.0, np.where(m < 0, 0.0, 0.5))
    credit[np.isnan(m)] = np.nan
    return credit


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float],
                      p_chosen: Sequence[float | None] | None = None) -> float:
    """Mean credit (ties 1/2) over pairs with a majority side; NaN if there are none."""
    credit = pair_credit(chosen, rejected, p_chosen)
    credit = credit[~np.isnan(credit)]
    return float(credit.mean()) if credit.size else math.nan


def bootstrap_ci(values: Sequence[float] | np.ndarray, stat: Callable[[np.ndarray], float] = np.mean, *,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over the first axis of ``values`` (N, ...).

    Items are resampled with replacement ``n_boot`` times from ``np.random.default_rng(seed)``; the
    interval is the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled statistic
    (NaN statistics are ignored). ``(nan, nan)`` for fewer than 2 items.
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0] if v.ndim else 0
    if n < 2:
        return (math.nan, math.nan)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    stats = np.array([stat(v[i]) for i in idx], dtype=np.float64)
    stats = stats[~np.isnan(stats)]
    if not stats.size:
        return (math.nan, math.nan)
    a = (1 - level) / 2
    return (float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a)))


def ratio_of_means_ci(numerator: Sequence[float], denominator: Sequence[float], *, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``mean(numerator) / mean(denominator)`` and its percentile bootstrap interval, the two samples
    resampled independently (e.g. steps to a target of sequence-level runs over token-level runs, one value
    per seed). Returns ``(ratio, low, high)``; the interval is ``(nan, nan)`` when either sample has fewer
    than 2 values. Raises ValueError for an empty sample or a non-positive denominator mean.

    Worked: numerator [6, 6], denominator [4, 2] -> 6 / 3 = 2.0; every resample of the numerator has mean
    6 and the denominator's means are 4, 3 or 2, so the interval lies within [1.5, 3.0].
    """
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if not num.size or not den.size:
        raise ValueError("ratio_of_means_ci needs at least one value on each side")
    if den.mean() <= 0:
        raise ValueError(f"the denominator's mean must be positive, got {den.mean()}")
    ratio = float(num.mean() / den.mean())
    if num.size < 2 or den.size < 2:
        return ratio, math.nan, math.nan
    rng = np.random.default_rng(seed)
    nb = num[rng.integers(0, num.size, size=(n_boot, num.size))].mean(1)
    db = den[rng.integers(0, den.size, size=(n_boot, den.size))].mean(1)
    r = nb[db > 0] / db[db > 0]
    a = (1 - level) / 2
    return ratio, float(np.quantile(r, a)), float(np.quantile(r, 1 - a))


def accuracy_with_ci(chosen: Sequence[float], rejected: Sequence[float],
                     p_chosen: Sequence[float | None] | None = None, *, n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0) -> AccuracyCI:
    """Pairwise accuracy (ties 1/2, soft labels by majority side) with a bootstrap interval."""
    credit = pair_credit(chosen, rejected, p_chosen)
    m = margins(chosen, rejected, p_chosen)
    keep = ~np.isnan(credit)
    credit = credit[keep]
    if not credit.size:
        return AccuracyCI(math.nan, math.nan, math.nan, 0, 0)
    lo, hi = bootstrap_ci(credit, np.mean, n_boot=n_boot, level=level, seed=seed)
    return AccuracyCI(float(credit.mean()), lo, hi, int(credit.size), int(np.sum(m[keep] == 0)))


def _rank_corr(kind: str, x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    if kind == "pearson":
        return float(stats.pearsonr(x, y)[0])
    if kind == "spearman":
        return float(stats.spearmanr(x, y)[0])
    return float(stats.kendalltau(x, y)[0])  # tau-b: ties handled


def correlations(scores: Sequence[float], ratings: Sequence[float]) -> Correlations:
    """Pearson, Spearman and Kendall tau-b between ``scores`` (N,) and ``ratings`` (N,)."""
    x, y = _as_array(scores, "scores"), _as_array(ratings, "ratings")
    if x.shape != y.shape:
        raise ValueError(f"scores and ratings differ in length: {x.size} vs {y.size}")
    return Correlations(_rank_corr("pearson", x, y), _rank_corr("spearman", x, y), _rank_corr("kendall", x, y),
                        int(x.size))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of two (N,) arrays (NaN when undefined); a ``stat`` for ``bootstrap_ci`` over (N, 2)."""
    return _rank_corr("spearman", np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
