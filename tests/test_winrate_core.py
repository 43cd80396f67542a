"""Win rate and length-controlled win rate math (finealign.core.winrate), and the AlpacaEval 2 check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finealign.core import winrate as wr


def test_win_rate_hand_worked():
    # prefs 1, 0, 1/2, 1: mean = 2.5 / 4 = 0.625
    # deviations .375, -.625, -.125, .375 -> squares .140625 + .390625 + .015625 + .140625 = .6875
    # var (ddof 1) = .6875 / 3 = .229167; std = .478714; SE = .478714 / sqrt(4) = .239357
    r = wr.win_rate_stats([1, 0, 0.5, 1], n_boot=200)
    assert r.win_rate == pytest.approx(0.625)
    assert r.se == pytest.approx(0.239357, abs=1e-6)
    assert (r.n, r.wins, r.losses, r.ties) == (4, 2, 1, 1)
    assert 0.0 <= r.ci_low <= r.win_rate <= r.ci_high <= 1.0


def test_win_rate_edge_cases():
    assert math.isnan(wr.win_rate_stats([]).win_rate)
    one = wr.win_rate_stats([1.0])
    assert one.win_rate == 1.0 and math.isnan(one.se)
    with pytest.raises(ValueError):
        wr.win_rate_stats([1.2])


def test_combine_orders_hand_worked():
    p1 = [0.9, 0.2, 0.7, 0.5]  # P(output better), output shown first
    p2 = [0.8, 0.6, 0.3, 0.9]  # P(output better), output shown second
    hard, dis = wr.combine_orders(p1, p2, "hard")
    # verdicts: (1, 1) -> 1; (0, 1) -> 1/2; (1, 0) -> 1/2; (1/2, 1) -> 3/4
    assert hard.tolist() == [1.0, 0.5, 0.5, 0.75]
    # disagreement: different winners only; a tie against a win is not a disagreement
    assert dis.tolist() == [False, True, True, False]
    soft, _ = wr.combine_orders(p1, p2, "soft")
    assert soft == pytest.approx([0.85, 0.4, 0.5, 0.7])
    with pytest.raises(ValueError):
        wr.combine_orders(p1, p2, "median")


def test_length_feature_hand_worked():
    # delta = [2, 0]; std (ddof 1) = sqrt(((2-1)^2 + (0-1)^2) / 1) = sqrt(2)
    # tanh(2 / sqrt 2) = tanh(1.41421) = 0.888385
    f = wr.length_feature([3, 1], [1, 1])
    assert f == pytest.approx([0.888385, 0.0], abs=1e-6)
    assert wr.length_feature([5, 5], [1, 1]).tolist() == [0.0, 0.0]  # constant delta: no information


def test_fit_soft_logistic_intercept_only():
    # soft targets all 0.2 -> the intercept is logit(0.2) = log(0.2 / 0.8) = -1.386294
    fit = wr.fit_soft_logistic(np.ones((4, 1)), [0.2] * 4)
    assert fit.coef[0] == pytest.approx(-1.386294, abs=1e-5)
    assert fit.cov.shape == (1, 1)


def _lengths(rng, n, shift=0.0):
    ref = rng.integers(200, 2000, size=n).astype(float)
    out = np.maximum(10.0, ref * np.exp(rng.normal(shift, 0.5, size=n)))
    return out, ref


def test_lc_equals_wr_without_length_effect():
    rng = np.random.default_rng(0)
    out, ref = _lengths(rng, 400, shift=0.5)
    soft = wr.lc_win_rate(np.full(400, 0.3), out, ref)  # constant preference: the GLM is exact
    assert soft.lc_win_rate == pytest.approx(0.3, abs=1e-5)
    assert soft.coef["length"] == pytest.approx(0.0, abs=1e-4)
    hard = (rng.random(2000) < 0.35).astype(float)  # verdicts drawn independently of length
    out2, ref2 = _lengths(rng, 2000, shift=0.5)
    r = wr.lc_win_rate(hard, out2, ref2)
    assert r.lc_win_rate == pytest.approx(hard.mean(), abs=0.03)
    assert r.se > 0


def test_lc_removes_a_pure_length_effect():
    rng = np.random.default_rng(1)
    out, ref = _lengths(rng, 800, shift=0.8)  # the system writes longer answers
    f = wr.length_feature(out, ref)
    p = 1 / (1 + np.exp(-(0.0 + 2.0 * f)))  # judge: equal quality (intercept 0), loves length
    r = wr.lc_win_rate(p, out, ref)
    assert p.mean() > 0.6  # the raw win rate is inflated by length
    assert r.lc_win_rate == pytest.approx(0.5, abs=1e-4)  # the LC removes it exactly
    assert r.coef["length"] == pytest.approx(2.0, abs=1e-3)


def test_lc_is_symmetric_in_the_two_sides():
    rng = np.random.default_rng(2)
    out, ref = _lengths(rng, 300, shift=0.3)
    p = rng.random(300)
    a = wr.lc_win_rate(p, out, ref)
    b = wr.lc_win_rate(1 - p, ref, out)  # swap which side is evaluated
    assert a.lc_win_rate + b.lc_win_rate == pytest.approx(1.0, abs=1e-5)
    assert a.se == pytest.approx(b.se, rel=1e-3)


# The example: 8 prompts, the longer answer always wins (6 longer outputs win, 2 shorter ones lose).
SEP_REF = [167, 217, 627, 1265, 661, 1201, 543, 435]
SEP_OUT = [166, 20, 1014, 1384, 790, 1410, 898, 634]


def test_separation_makes_the_lc_not_estimable():
    p = [float(o > r) for o, r in zip(SEP_OUT, SEP_REF)]
    assert sum(p) / 8 == 0.75  # raw win rate 6 / 8
    r = wr.lc_win_rate(p, SEP_OUT, SEP_REF)  # before: LC 0.0%, SE 0.0, length coefficient 72, no warning
    assert r.status == "not estimable" and not r.estimable and math.isnan(r.lc_win_rate) and math.isnan(r.se)
    assert "separation" in r.reason and "length" in r.reason
    allwin = wr.lc_win_rate([1.0] * 8, SEP_OUT, SEP_REF)
    assert allwin.status == "not estimable" and "all 8 decided verdicts are wins" in allwin.reason
    # one verdict against length breaks the separation: estimable, but the length coefficient is huge
    p[4] = 0.0
    r = wr.lc_win_rate(p, SEP_OUT, SEP_REF)
    assert r.status == "unstable" and r.coef["length"] > wr.UNSTABLE_COEF and "near separation" in r.reason
    assert math.isfinite(r.lc_win_rate)
    assert wr.lc_win_rate([0.3], [1], [2]).status == "not estimable"  # one prompt


def test_the_separation_reason_is_true_for_the_data():
    # 3 wins and 5 losses, separated by length: the 3 longest outputs (differences +300, +200, +100) win, the
    # others (-50 ... -400) lose. Not "every verdict goes one way": 3 go one way, 5 the other.
    ref = [500] * 8
    out = [800, 700, 600, 450, 400, 300, 200, 100]
    p = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    r = wr.lc_win_rate(p, out, ref)
    assert r.status == "not estimable"
    assert "the length difference separates the 3 wins from the 5 losses perfectly" in r.reason
    assert "the longer answer wins" in r.reason and "one way" not in r.reason and "all " not in r.reason
    # the same lengths, the shorter answers win
    r = wr.lc_win_rate([1.0 - x for x in p], out, ref)
    assert "separates the 5 wins from the 3 losses" in r.reason and "the shorter answer wins" in r.reason
    # all losses but a tie at the longest output (a tie pins b0 + b1 f = 0 there; b1 > 0 still separates): said so
    r = wr.lc_win_rate([0.5] + [0.0] * 7, out, ref)
    assert "all 7 decided verdicts are losses (the other one is a tie or soft)" in r.reason


def test_separation_direction_hand_worked():
    X = np.array([[1.0, -1.0], [1.0, 1.0]])
    # a loss at x = -1, a win at x = +1: b = (0, 1) separates (margins 1 + 1 = 2 within the box |b| <= 1)
    assert wr.separation_direction(X, [0.0, 1.0]) is not None
    # a tie at x = -1 forces b0 - b1 = 0; b = (1, 1) still gives the win a margin 2 > 0: quasi-separation
    assert wr.separation_direction(X, [0.5, 1.0]) == pytest.approx([1.0, 1.0])
    # a loss and a win at the same x: any b has x b >= 0 and x b <= 0 on the same row, margin 0: finite fit
    assert wr.separation_direction(np.array([[1.0, 0.5], [1.0, 0.5], [1.0, -1.0]]), [0.0, 1.0, 0.5]) is None
    assert wr.separation_direction(X, [0.2, 0.7]) is None  # soft targets only: no separation


def test_lc_not_converged_is_not_estimable(monkeypatch):
    real = wr.fit_soft_logistic
    monkeypatch.setattr(wr, "fit_soft_logistic", lambda X, p, **k: real(X, p, **k)._replace(converged=False))
    r = wr.lc_win_rate([0.2, 0.6, 0.9], [10, 20, 30], [15, 15, 15])
    assert r.status == "not estimable" and "did not converge" in r.reason


def _cases(n_cases=40):
    """Random systems, N from 3 to 60: soft preferences, hard ones (0 / 1/2 / 1), or hard ones where the
    longer answer wins (separated)."""
    rng = np.random.default_rng(7)
    for i in range(n_cases):
        n = int(rng.integers(3, 61))
        ref = rng.integers(20, 2000, size=n).astype(float)
        out = np.maximum(1.0, ref * np.exp(rng.normal(0.2, 0.6, size=n)))
        p = [rng.random(n), rng.choice([0.0, 0.5, 1.0], size=n), (out > ref).astype(float)][i % 3]
        yield p, out, ref


def test_property_swapping_sides_gives_one_minus_lc():
    seen = set()
    for p, out, ref in _cases():
        a, b = wr.lc_win_rate(p, out, ref), wr.lc_win_rate(1 - p, ref, out)
        assert a.status == b.status
        seen.add(a.status)
        if a.estimable:
            assert a.lc_win_rate + b.lc_win_rate == pytest.approx(1.0, abs=1e-5)
    assert "ok" in seen and "not estimable" in seen  # both branches were exercised


def test_property_all_ties_give_one_half():
    for p, out, ref in _cases(20):
        r = wr.lc_win_rate(np.full(p.size, 0.5), out, ref)
        assert r.status == "ok" and r.lc_win_rate == pytest.approx(0.5, abs=1e-9) and r.coef["length"] == 0.0


def test_property_equal_lengths_give_the_raw_win_rate():
    for p, out, _ in _cases():
        if 0 < p.mean() < 1:
            r = wr.lc_win_rate(p, out, out)  # no length difference: the length feature is 0 everywhere
            assert r.status == "ok" and r.lc_win_rate == pytest.approx(p.mean(), abs=1e-6)


def test_instruction_difficulty_recovers_planted_difficulty():
    rng = np.random.default_rng(3)
    S, N = 6, 300
    gamma = rng.normal(0, 1.5, size=N)
    theta = rng.normal(-1, 0.5, size=S)
    ref = rng.integers(200, 2000, size=N).astype(float)
    L = np.stack([np.maximum(10.0, ref * np.exp(rng.normal(0.3, 0.5, size=N))) for _ in range(S)])
    F = np.stack([wr.length_feature(L[s], ref) for s in range(S)])
    P = 1 / (1 + np.exp(-(theta[:, None] + 1.0 * F + gamma[None, :])))
    g = wr.instruction_difficulty(P, F, l2=0.1)
    assert abs(g.mean()) < 1e-9
    assert np.corrcoef(g, gamma)[0, 1] > 0.99
    lcs = wr.lc_win_rates(P, L, ref)
    truth = (1 / (1 + np.exp(-(theta[:, None] + gamma[None, :])))).mean(axis=1)  # length term at zero
    assert [r.lc_win_rate for r in lcs] == pytest.approx(truth.tolist(), abs=0.01)


def test_lc_win_rates_single_system_falls_back():
    rng = np.random.default_rng(4)
    out, ref = _lengths(rng, 50)
    p = rng.random(50)
    [r] = wr.lc_win_rates(p[None, :], out[None, :], ref)
    assert r.lc_win_rate == pytest.approx(wr.lc_win_rate(p, out, ref).lc_win_rate)
    assert "difficulty" not in r.coef


def test_alpaca_eval_lc_check_matches_published(shared_data):
    """Our win rate within 0.01 points and LC within 2.5 points of the published AlpacaEval 2 leaderboard
    for each of the 8 annotated systems; Spearman 1.0 between our LC and the published LC."""
    from finealign.core.stats import spearman
    from finealign.eval.lc_check import alpaca_eval_lc_check

    if not (shared_data / "alpaca_eval_v2_gpt4turbo_annotations").is_dir():
        pytest.skip("AlpacaEval annotations not in the shared data folder")
    rows = alpaca_eval_lc_check(shared_data)
    assert len(rows) == 8
    for r in rows:
        assert abs(r.win_rate - r.published_win_rate) < 0.01, r
        assert abs(r.lc_win_rate - r.published_lc) < 2.5, r
        assert r.lc_status == r.lc_single_status == "ok"  # soft preferences: no separation, converged, |phi| <= 10
    rho = spearman(np.array([r.lc_win_rate for r in rows]), np.array([r.published_lc for r in rows]))
    assert rho == pytest.approx(1.0)
