"""core.stats: hand-worked pairwise accuracy, soft labels, bootstrap intervals, correlations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finealign.core import stats


def test_accuracy_with_ties_hand_worked():
    # pairs: 3>1 agree (1), 2<5 disagree (0), 4=4 tie (0.5), 0>-1 agree (1) -> (1+0+0.5+1)/4 = 0.625
    c, r = [3, 2, 4, 0], [1, 5, 4, -1]
    assert stats.pairwise_accuracy(c, r) == pytest.approx(0.625)
    assert list(stats.pair_credit(c, r)) == [1.0, 0.0, 0.5, 1.0]


def test_soft_labels_use_the_majority_side():
    # p_chosen 0.8: chosen is the majority, scorer prefers chosen (2 > 1) -> 1
    # p_chosen 0.3: rejected is the majority, scorer prefers chosen (2 > 1) -> 0
    # p_chosen 0.2: rejected is the majority, scorer prefers rejected (1 < 3) -> 1
    # p_chosen 0.5: no majority -> left out. Accuracy = (1 + 0 + 1) / 3 = 2/3
    c, r, p = [2, 2, 1, 9], [1, 1, 3, 0], [0.8, 0.3, 0.2, 0.5]
    credit = stats.pair_credit(c, r, p)
    assert list(credit[:3]) == [1.0, 0.0, 1.0] and math.isnan(credit[3])
    assert stats.pairwise_accuracy(c, r, p) == pytest.approx(2 / 3)
    # margins signed toward the majority: (2-1)*+1, (2-1)*-1, (1-3)*-1
    assert list(stats.margins(c, r, p)[:3]) == [1.0, -1.0, 2.0]
    # None means a hard label (chosen is better)
    assert stats.pairwise_accuracy([1, 0], [0, 1], [None, None]) == 0.5


def test_accuracy_ci_and_tie_count():
    res = stats.accuracy_with_ci([1, 1, 2, 0], [0, 1, 0, 1], n_boot=200, seed=3)
    # credits 1, 0.5, 1, 0 -> 2.5 / 4
    assert res.accuracy == pytest.approx(0.625) and res.n == 4 and res.ties == 1
    assert 0.0 <= res.low <= res.accuracy <= res.high <= 1.0


def test_bootstrap_is_seeded_and_degenerate_cases():
    v = np.arange(20, dtype=float)
    a = stats.bootstrap_ci(v, seed=1, n_boot=300)
    assert a == stats.bootstrap_ci(v, seed=1, n_boot=300)
    assert a != stats.bootstrap_ci(v, seed=2, n_boot=300)
    assert a[0] < v.mean() < a[1]
    # a constant sample has a zero-width interval; one item has none
    assert stats.bootstrap_ci(np.full(10, 0.7)) == pytest.approx((0.7, 0.7))
    assert all(math.isnan(x) for x in stats.bootstrap_ci([1.0]))


def test_correlations_hand_worked():
    # y = 2x + 1 exactly: every correlation is 1; reversed: -1
    x = [1, 2, 3, 4]
    c = stats.correlations(x, [3, 5, 7, 9])
    assert (c.pearson, c.spearman, c.kendall, c.n) == pytest.approx((1.0, 1.0, 1.0, 4))
    assert stats.correlations(x, [4, 3, 2, 1]).kendall == pytest.approx(-1.0)
    # x = 1,2,3 vs y = 1,3,2: concordant pairs (1,2),(1,3), discordant (2,3): tau = (2-1)/3
    assert stats.correlations([1, 2, 3], [1, 3, 2]).kendall == pytest.approx(1 / 3)
    # spearman: ranks d = 0, -1, 1 -> 1 - 6*2/(3*8) = 0.5
    assert stats.correlations([1, 2, 3], [1, 3, 2]).spearman == pytest.approx(0.5)
    assert math.isnan(stats.correlations([1, 1, 1], [1, 2, 3]).pearson)


def test_invariants_and_errors():
    rng = np.random.default_rng(0)
    c, r = rng.normal(size=50), rng.normal(size=50)
    # swapping chosen and rejected turns accuracy a into 1 - a
    assert stats.pairwise_accuracy(c, r) + stats.pairwise_accuracy(r, c) == pytest.approx(1.0)
    # a monotone transform of the scores changes no pairwise decision
    assert stats.pairwise_accuracy(np.exp(c), np.exp(r)) == stats.pairwise_accuracy(c, r)
    with pytest.raises(ValueError):
        stats.pairwise_accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        stats.pairwise_accuracy([1], [0], [1.5])
    with pytest.raises(ValueError):
        stats.correlations([1.0, float("nan")], [1, 2])
