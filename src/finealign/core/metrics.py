"""Pure evaluation metrics for token-level rewards (no models, no I/O).

The question these answer: does a token-level reward model put *low* rewards on the tokens an
editor changed in the original (less-preferred) response? Token labels come from
``core.align`` (1 = changed in the original, E_l; 0 = unchanged); rewards from a token scorer.

Notation: N tokens pooled over all responses (ragged per-response lists are flattened).

* ``auroc(scores, labels)``: area under the ROC curve = P(score of a random positive > score of
  a random negative), ties counted 1/2 (Mann-Whitney U with average ranks).
* ``changed_token_auroc(rewards, labels)``: AUROC of ``-reward`` for the changed tokens, i.e.
  how well a *low* reward flags a changed token. 0.5 is chance, 1.0 perfect.
* ``precision_recall_at(rewards, labels, threshold)``: flag tokens with ``reward < threshold``
  as changed; precision and recall of those flags.
* ``pairwise_accuracy(better, worse)``: fraction of pairs with ``better > worse``, ties 1/2.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "PrecisionRecall", "TokenMetrics", "auroc", "changed_token_auroc", "flatten", "length_balanced_accuracy",
    "pairwise_accuracy", "precision_recall_at", "r_precision", "token_metrics",
]


def flatten(x) -> list:
    """Flatten one level of nesting: ``[[1, 2], [3]] -> [1, 2, 3]``; a flat sequence is returned as a list."""
    if hasattr(x, "tolist") and not isinstance(x, list):  # numpy array / torch tensor
        x = x.tolist()
    x = list(x)
    if any(_is_row(v) for v in x):
        return [float(v) if not isinstance(v, (int, bool)) else v for row in x for v in _as_list(row)]
    return [v.item() if hasattr(v, "item") else v for v in x]


def _is_row(v) -> bool:
    return isinstance(v, (list, tuple)) or (hasattr(v, "tolist") and getattr(v, "ndim", 0) >= 1)


def _as_list(row) -> list:
    return row.tolist() if hasattr(row, "tolist") else list(row)


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(flatten(scores), dtype=np.float64)
    y = np.asarray(flatten(labels))
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if s.size and not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if y.size and not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    return s, y.astype(bool)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (N,), ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of runs of equal values in the sorted array
    change = np.flatnonzero(np.diff(xs) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [xs.size]])
    avg = (starts + 1 + ends) / 2.0  # mean of ranks start+1 .. end
    ranks_sorted = np.repeat(avg, ends - starts)
    ranks = np.empty_like(ranks_sorted)
    ranks[order] = ranks_sorted
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """AUROC of ``scores`` (N,) for binary ``labels`` (N,), positives = 1; ties averaged.

    ``(sum of positives' average ranks - P(P+1)/2) / (P * Q)`` for P positives, Q negatives.
    NaN when either class is empty. Ragged lists of lists are flattened.
    """
    s, y = _check(scores, labels)
    p, q = int(y.sum()), int((~y).sum())
    if p == 0 or q == 0:
        return math.nan
    r = average_ranks(s)
    return float((r[y].sum() - p * (p + 1) / 2.0) / (p * q))


def changed_token_auroc(rewards: Sequence[float], labels: Sequence[int]) -> float:
    """AUROC of low rewards for changed tokens: ``auroc(-rewards, labels)``."""
    return auroc([-v for v in flatten(rewards)], labels)


class PrecisionRecall(NamedTuple):
    """Flags = tokens with reward below the threshold; positives = changed tokens.

    ``precision = tp / n_flagged`` (0.0 when nothing is flagged), ``recall = tp / n_pos`` (0.0
    when there are no positives), ``f1`` their harmonic mean (0.0 when both are 0).
    """

    precision: float
    recall: float
    f1: float
    tp: int
    n_flagged: int
    n_pos: int
    threshold: float


def precision_recall_at(rewards: Sequence[float], labels: Sequence[int], threshold: float = 0.0) -> PrecisionRecall:
    """Precision/recall of flagging ``reward < threshold`` as "changed" (N tokens, flattened)."""
    r, y = _check(rewards, labels)
    flagged = r < threshold
    tp = int((flagged & y).sum())
    nf, npos = int(flagged.sum()), int(y.sum())
    prec = tp / nf if nf else 0.0
    rec = tp / npos if npos else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return PrecisionRecall(prec, rec, f1, tp, nf, npos, float(threshold))


def r_precision(rewards: Sequence[float], labels: Sequence[int]) -> float:
    """Precision among the K lowest-reward tokens, K = number of changed tokens (= recall there).

    Ties at the cut are shared fractionally (each tied token counts as the fraction of the tie
    group that fits in the K), so the value does not depend on the order of equal rewards.
    NaN when there are no changed tokens.
    """
    r, y = _check(rewards, labels)
    k = int(y.sum())
    if k == 0:
        return math.nan
    order = np.sort(r)
    cut = order[k - 1]
    below = r < cut
    tied = r == cut
    room = k - int(below.sum())  # how many of the tied tokens fit
    hits = float((below & y).sum()) + room * float((tied & y).sum()) / float(tied.sum())
    return hits / k


def pairwise_accuracy(better: Sequence[float], worse: Sequence[float]) -> float:
    """Fraction of pairs with ``better[i] > worse[i]``, ties counted 1/2; NaN for no pairs."""
    b = np.asarray(better, dtype=np.float64)
    w = np.asarray(worse, dtype=np.float64)
    if b.shape != w.shape:
        raise ValueError(f"better and worse differ in length: {b.shape[0]} vs {w.shape[0]}")
    if b.size == 0:
        return math.nan
    return float(((b > w).sum() + 0.5 * (b == w).sum()) / b.size)


def length_balanced_accuracy(better: Sequence[float], worse: Sequence[float], better_len: Sequence[int],
                             worse_len: Sequence[int]) -> float:
    """Pairwise accuracy with the length shortcut taken out: the mean of the accuracy on the pairs whose
    better response is the longer one and the accuracy on the pairs whose better response is the shorter.

    ``better`` / ``worse`` (N,) scores, ``better_len`` / ``worse_len`` (N,) lengths (any unit); pairs of equal
    length are left out. A score that only prefers shorter (or longer) responses gets 0.5, whatever the mix
    of pairs. NaN when either group is empty. Ties in score count 1/2 (``pairwise_accuracy``). The same
    idea as balanced accuracy over the two length strata.
    """
    if not (len(better) == len(worse) == len(better_len) == len(worse_len)):
        raise ValueError("better, worse, better_len and worse_len must have the same length")
    groups = [[(b, w) for b, w, lb, lw in zip(better, worse, better_len, worse_len) if (lb > lw) == longer and lb != lw]
              for longer in (True, False)]
    if not all(groups):
        return math.nan
    return float(np.mean([pairwise_accuracy(*zip(*g)) for g in groups]))


class TokenMetrics(NamedTuple):
    """Token-level metrics of one evaluation set (see ``token_metrics``)."""

    auroc: float
    r_precision: float
    precision: float
    recall: float
    f1: float
    threshold: float
    n_tokens: int
    n_changed: int


def token_metrics(rewards, labels, threshold: float = 0.0) -> TokenMetrics:
    """All token metrics for low rewards on changed tokens; ``rewards``/``labels`` flat or ragged."""
    r, y = flatten(rewards), flatten(labels)
    pr = precision_recall_at(r, y, threshold)
    return TokenMetrics(changed_token_auroc(r, y), r_precision(r, y), pr.precision, pr.recall, pr.f1,
                        float(threshold), len(r), pr.n_pos)
