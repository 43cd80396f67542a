"""Token-level evaluation metrics: hand-worked values and invariants."""

from __future__ import annotations

import math
import random

import pytest

from finealign.core.metrics import (auroc, average_ranks, changed_token_auroc, flatten, length_balanced_accuracy,
                                    pairwise_accuracy, precision_recall_at, r_precision, token_metrics)


def brute_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_hand_worked():
    # perfect separation: every positive above every negative
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # scores 1,2,3,4 labels 0,1,0,1: pairs (pos,neg): (2>1) (2<3) (4>1) (4>3) -> 3/4
    assert auroc([1, 2, 3, 4], [0, 1, 0, 1]) == 0.75
    # ties averaged: scores [1,1,2] labels [1,0,1]: pos 1 vs neg 1 tie = 0.5, pos 2 vs neg 1 win = 1 -> 1.5/2
    assert auroc([1, 1, 2], [1, 0, 1]) == 0.75
    # all equal scores -> 0.5
    assert auroc([3, 3, 3, 3], [0, 1, 0, 1]) == 0.5
    # one class missing -> NaN
    assert math.isnan(auroc([1, 2], [1, 1])) and math.isnan(auroc([], []))


def test_average_ranks():
    # values 10, 20, 20, 5 -> sorted 5(1) 10(2) 20(3,4 -> 3.5)
    assert average_ranks(__import__("numpy").array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_auroc_matches_brute_force_random_with_ties():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 40)
        s = [rng.choice([0.0, 0.5, 1.0, 1.5, rng.random()]) for _ in range(n)]
        y = [rng.randint(0, 1) for _ in range(n)]
        if 0 < sum(y) < n:
            assert auroc(s, y) == pytest.approx(brute_auroc(s, y), abs=1e-12)
            # invariants: flipping the labels or negating the scores gives 1 - AUROC
            assert auroc(s, [1 - v for v in y]) == pytest.approx(1 - auroc(s, y))
            assert auroc([-v for v in s], y) == pytest.approx(1 - auroc(s, y))
            # a strictly increasing transform does not change it
            assert auroc([math.exp(v) for v in s], y) == pytest.approx(auroc(s, y))


def test_changed_token_auroc_low_rewards_flag_changes():
    # changed tokens (label 1) have the low rewards -> 1.0; ragged per-response lists are flattened
    rewards = [[0.5, -2.0, 0.4], [1.0, -1.0]]
    labels = [[0, 1, 0], [0, 1]]
    assert changed_token_auroc(rewards, labels) == 1.0
    assert flatten(rewards) == [0.5, -2.0, 0.4, 1.0, -1.0]


def test_precision_recall_hand_worked():
    # rewards [-1, -0.5, 0.2, -2, 0.3], labels [1, 0, 0, 1, 1], threshold 0:
    # flagged (reward < 0): idx 0, 1, 3 -> tp = 2 (idx 0, 3), n_flagged = 3, n_pos = 3
    # precision 2/3, recall 2/3, f1 2/3
    pr = precision_recall_at([-1, -0.5, 0.2, -2, 0.3], [1, 0, 0, 1, 1], threshold=0.0)
    assert (pr.tp, pr.n_flagged, pr.n_pos) == (2, 3, 3)
    assert pr.precision == pytest.approx(2 / 3) and pr.recall == pytest.approx(2 / 3) and pr.f1 == pytest.approx(2 / 3)
    # threshold -1.5: flagged idx 3 only -> precision 1, recall 1/3, f1 = 2*1*(1/3)/(4/3) = 0.5
    pr = precision_recall_at([-1, -0.5, 0.2, -2, 0.3], [1, 0, 0, 1, 1], threshold=-1.5)
    assert (pr.precision, pr.recall) == (1.0, pytest.approx(1 / 3)) and pr.f1 == pytest.approx(0.5)
    # nothing flagged / no positives -> 0.0, not NaN
    pr = precision_recall_at([1, 2], [0, 0], threshold=0.0)
    assert (pr.precision, pr.recall, pr.f1) == (0.0, 0.0, 0.0)
    # strict "<": a reward equal to the threshold is not flagged
    assert precision_recall_at([0.0], [1], 0.0).n_flagged == 0


def test_r_precision_hand_worked():
    # 2 changed tokens; the 2 lowest rewards are idx 1 (-3, changed) and idx 2 (-2, unchanged) -> 1/2
    assert r_precision([0.0, -3.0, -2.0, 1.0], [0, 1, 0, 1]) == 0.5
    # tie at the cut: rewards [-1, -1, -1, 5], labels [1, 0, 0, 0]; K = 1, three tied for one slot,
    # one of which is changed -> 1 * 1/3
    assert r_precision([-1, -1, -1, 5], [1, 0, 0, 0]) == pytest.approx(1 / 3)
    assert math.isnan(r_precision([1.0], [0]))


def test_pairwise_accuracy():
    # 3 wins, 1 tie (0.5), 1 loss out of 5 -> 3.5/5
    assert pairwise_accuracy([1, 2, 3, 4, 0], [0, 1, 2, 4, 1]) == pytest.approx(0.7)
    assert math.isnan(pairwise_accuracy([], []))
    with pytest.raises(ValueError):
        pairwise_accuracy([1], [1, 2])


def test_length_balanced_accuracy():
    # 4 pairs: better longer in pairs 0, 1 (right, wrong -> 0.5); better shorter in pairs 2, 3 (both right -> 1.0);
    # the 5th pair has equal lengths and is left out. Balanced: (0.5 + 1.0) / 2 = 0.75; plain accuracy 4/5 = 0.8
    better, worse = [2, 0, 3, 5, 9], [1, 1, 1, 1, 0]
    blen, wlen = [10, 10, 3, 3, 4], [5, 5, 8, 8, 4]
    assert length_balanced_accuracy(better, worse, blen, wlen) == pytest.approx(0.75)
    assert pairwise_accuracy(better, worse) == pytest.approx(0.8)
    # a score that is minus the length wins every "shorter is better" pair and loses every other: 0.5
    assert length_balanced_accuracy([-x for x in blen], [-x for x in wlen], blen, wlen) == pytest.approx(0.5)
    assert math.isnan(length_balanced_accuracy([1, 2], [0, 0], [5, 6], [1, 1]))  # no "better is shorter" pair
    with pytest.raises(ValueError):
        length_balanced_accuracy([1], [0], [1, 2], [1])


def test_token_metrics_and_validation():
    m = token_metrics([[-1.0, 1.0], [-2.0, 2.0, 0.5]], [[1, 0], [1, 0, 0]], threshold=0.0)
    # changed tokens have the two lowest rewards -> auroc 1, r-precision 1; flagged (<0) = both changed -> p = r = 1
    assert (m.auroc, m.r_precision, m.precision, m.recall, m.n_tokens, m.n_changed) == (1.0, 1.0, 1.0, 1.0, 5, 2)
    with pytest.raises(ValueError):
        auroc([1, 2], [1])
    with pytest.raises(ValueError):
        auroc([1, 2], [1, 2])
    with pytest.raises(ValueError):
        auroc([1, float("nan")], [1, 0])


def test_accepts_tensors_and_arrays():
    import numpy as np
    import torch

    # per-response tensors (what a scorer batch gives) and arrays flatten like lists
    rewards = [torch.tensor([0.5, -2.0, 0.4]), torch.tensor([1.0, -1.0])]
    labels = [np.array([0, 1, 0]), np.array([0, 1])]
    assert changed_token_auroc(rewards, labels) == 1.0
    assert auroc(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 1, 0, 1])) == 0.75
