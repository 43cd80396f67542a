"""Win rate and AlpacaEval 2's length-controlled win rate: pure math over arrays (no models, no I/O).

Notation: N prompts (instructions), S systems sharing them. A *preference* ``p`` in [0, 1] is the
credit of the evaluated system's output against the reference's on one prompt: 1 a win, 0 a loss,
1/2 a tie, or a judge's probability (AlpacaEval's weighted preference ``preference - 1``).

* ``combine_orders(p_first, p_second, mode)``: a pairwise judge sees each pair in both orders; ``hard``
  turns each order's probability into a verdict (1, 0, 1/2) and averages the two (orders that point
  to different winners make a tie), ``soft`` averages the probabilities (AlpacaEval's weighted mode).
* ``win_rate_stats(p)``: mean preference with its standard error ``std(p, ddof=1) / sqrt(N)``
  (AlpacaEval's ``standard_error``) and a percentile bootstrap 95% interval.
* ``length_feature(len_out, len_ref)``: ``tanh((len_out - len_ref) / std(len_out - len_ref))``, the
  normalised length difference of Dubois et al. 2024 ("Length-Controlled AlpacaEval", arXiv 2404.04475,
  eq. 3), std over the N prompts of one system (ddof=1).
* ``fit_soft_logistic(X, p)``: a logistic GLM fitted to soft targets by weighted cross-entropy
  ``-sum_i w_i [p_i log s(x_i b) + (1 - p_i) log(1 - s(x_i b))]`` (+ an optional L2 penalty), with a
  sandwich (robust) covariance of the coefficients.
* ``instruction_difficulty(P, F)``: per-prompt difficulty ``gamma_x`` from S systems on the same N
  prompts, the fixed effect of ``logit q_{s,x} = theta_s + phi_s * F_{s,x} + gamma_x`` (ridge on gamma).
* ``lc_win_rate(p, len_out, len_ref, difficulty=None)``: AlpacaEval 2's GLM for one system,
  ``logit q_x = theta + phi * tanh(std_delta_len_x) [+ psi * gamma_x]``; the length-controlled win rate
  is the mean prediction with the length term at zero, ``mean_x s(theta [+ psi * gamma_x])``, and its
  standard error comes from the delta method on the sandwich covariance. When the GLM has no finite
  maximum-likelihood fit (``separation``: the verdicts are perfectly predicted by a direction of the
  design, e.g. "the longer answer always wins"; or the optimiser did not converge) the LC win rate is
  *not estimable*: ``status`` says so, the value and SE are NaN, ``reason`` says why. A fit whose length
  coefficient exceeds ``UNSTABLE_COEF`` (near separation) is reported as ``unstable``. We detect rather
  than regularise: a penalised fit would always give a number, but under separation that number is set
  by the penalty, not by the data; and the unpenalised fit keeps the check against the published
  AlpacaEval 2 values unchanged.
* ``separation_direction(X, p)``: the linear-programming check for (quasi-)complete separation of a
  soft-target logistic GLM (Albert & Anderson 1984; Konis 2007).
* ``lc_win_rates(P, L_out, len_ref)``: the same for S systems sharing the prompts, with the difficulty
  term estimated from all of them (how AlpacaEval 2 uses its precomputed ``instruction_difficulty``).

AlpacaEval's own fit differs in two ways we cannot reproduce offline: its difficulty was estimated once
from the whole leaderboard, and it regularises toward annotations of "gamed" (verbose / concise)
baseline outputs. The shared annotations check (docs/winrate.md) measures the effect of both.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from .stats import bootstrap_ci

__all__ = ["LCWinRate", "LC_NOT_ESTIMABLE", "LC_OK", "LC_UNSTABLE", "UNSTABLE_COEF", "LogisticFit", "WinRate", "combine_orders", "fit_soft_logistic",
           "instruction_difficulty", "lc_win_rate", "lc_win_rates", "length_feature", "separation_direction", "separation_reason",
           "win_rate_stats"]


class WinRate(NamedTuple):
    """Mean preference over ``n`` prompts; ``wins``/``losses``/``ties``: preferences >, <, == 1/2."""

    win_rate: float
    se: float
    ci_low: float
    ci_high: float
    n: int
    wins: int
    losses: int
    ties: int


class LogisticFit(NamedTuple):
    """Coefficients (K,) of a soft-target logistic GLM and their sandwich covariance (K, K)."""

    coef: np.ndarray
    cov: np.ndarray
    converged: bool


LC_OK, LC_UNSTABLE, LC_NOT_ESTIMABLE = "ok", "unstable", "not estimable"
#: a length (or difficulty) coefficient beyond this on the logit scale makes the fit "unstable": the feature is
#: bounded by 1 (tanh), so it moves the log-odds by more than 20, i.e. the verdicts nearly follow it. The 8
#: published AlpacaEval 2 systems have length coefficients of 1.5 to 4.4 (single-system fit).
UNSTABLE_COEF = 10.0


class LCWinRate(NamedTuple):
    """Length-controlled win rate of one system with its delta-method standard error.

    ``coef``: {"intercept": theta, "length": phi[, "difficulty": psi]} on the logit scale (empty when not
    estimable). ``status``: ``"ok"``; ``"unstable"`` (estimated, but a non-intercept coefficient exceeds
    ``UNSTABLE_COEF``: near separation, the delta-method SE understates the uncertainty; ``reason`` says
    so); or ``"not estimable"`` (then ``lc_win_rate`` and ``se`` are NaN and ``reason`` says why:
    separation, no convergence, fewer than 2 prompts).
    """

    lc_win_rate: float
    se: float
    coef: dict
    status: str = LC_OK
    reason: str | None = None

    @property
    def estimable(self) -> bool:
        return self.status != LC_NOT_ESTIMABLE


def _pref(p: Sequence[float], name: str = "preferences") -> np.ndarray:
    a = np.asarray(p, dtype=np.float64).reshape(-1)
    if a.size and (not np.all(np.isfinite(a)) or np.any((a < 0) | (a > 1))):
        raise ValueError(f"{name} must be finite numbers in [0, 1]")
    return a


def combine_orders(p_first: Sequence[float], p_second: Sequence[float],
                   mode: str = "hard") -> tuple[np.ndarray, np.ndarray]:
    """Preferences (N,) from a judge's two orders, and (N,) bools: did the orders disagree?

    ``p_first[i]`` / ``p_second[i]``: P(the evaluated output is better) when it was shown first / second.
    ``hard``: ``(v(p_first) + v(p_second)) / 2`` with ``v(p) = 1 if p > 1/2, 0 if p < 1/2, 1/2 if p == 1/2``;
    ``soft``: ``(p_first + p_second) / 2``. The orders disagree when they point to different winners,
    ``(p_first - 1/2) * (p_second - 1/2) < 0``. Raises ``ValueError`` on bad input.
    """
    a, b = _pref(p_first, "p_first"), _pref(p_second, "p_second")
    if a.shape != b.shape:
        raise ValueError(f"p_first and p_second differ in length: {a.size} vs {b.size}")
    if mode == "hard":
        pref = (np.sign(a - 0.5) + np.sign(b - 0.5)) / 4 + 0.5
    elif mode == "soft":
        pref = (a + b) / 2
    else:
        raise ValueError(f"mode must be hard or soft, got {mode!r}")
    return pref, (a - 0.5) * (b - 0.5) < 0


def win_rate_stats(pref: Sequence[float], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> WinRate:
    """Win rate of (N,) preferences in [0, 1] (ties 1/2): mean, SE ``std(ddof=1)/sqrt(N)``, bootstrap interval.

    NaN statistics for N = 0 (and NaN SE / interval for N = 1).
    """
    p = _pref(pref)
    n = int(p.size)
    if n == 0:
        return WinRate(math.nan, math.nan, math.nan, math.nan, 0, 0, 0, 0)
    se = float(p.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    lo, hi = bootstrap_ci(p, np.mean, n_boot=n_boot, level=level, seed=seed)
    return WinRate(float(p.mean()), se, lo, hi, n, int(np.sum(p > 0.5)), int(np.sum(p < 0.5)),
                   int(np.sum(p == 0.5)))


def length_feature(len_out: Sequence[float], len_ref: Sequence[float]) -> np.ndarray:
    """(N,) ``tanh(delta / std(delta))`` with ``delta = len_out - len_ref`` (characters); zeros when std is 0."""
    d = np.asarray(len_out, dtype=np.float64) - np.asarray(len_ref, dtype=np.float64)
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return np.tanh(d / sd) if sd > 0 else np.zeros_like(d)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _soft_loss(beta, X, p, w, l2):
    """Weighted soft-target cross-entropy and its gradient; ``l2`` (K,) per-coefficient penalties."""
    z = X @ beta
    # -[p log s(z) + (1-p) log s(-z)] = logaddexp(0, z) - p z
    loss = float(np.sum(w * (np.logaddexp(0.0, z) - p * z)) + 0.5 * np.sum(l2 * beta * beta))
    grad = X.T @ (w * (_sigmoid(z) - p)) + l2 * beta
    return loss, grad


def fit_soft_logistic(X: np.ndarray, p: Sequence[float], *, weights: Sequence[float] | None = None,
                      l2: float | Sequence[float] = 0.0) -> LogisticFit:
    """Fit ``logit q = X b`` to soft targets ``p`` (N,) in [0, 1]; X: (N, K) (no intercept is added).

    Minimises the weighted cross-entropy with L-BFGS (scipy) plus ``l2/2 * |b|^2``. The covariance is
    the sandwich ``H^-1 (sum_i g_i g_i^T) H^-1`` (g_i the per-row score), which stays valid when the
    targets are probabilities rather than 0/1 draws. Raises ``ValueError`` on bad shapes or targets.
    """
    from scipy.optimize import minimize

    X = np.asarray(X, dtype=np.float64)
    y = _pref(p, "targets")
    if X.ndim != 2 or X.shape[0] != y.size:
        raise ValueError(f"X must be (N, K) with N = {y.size}, got {X.shape}")
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    pen = np.broadcast_to(np.asarray(l2, dtype=np.float64), (X.shape[1],)).copy()
    res = minimize(_soft_loss, np.zeros(X.shape[1]), args=(X, y, w, pen), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-9})
    beta = res.x
    q = _sigmoid(X @ beta)
    H = (X * (w * q * (1 - q))[:, None]).T @ X + np.diag(pen)
    g = X * (w * (q - y))[:, None]
    Hinv = np.linalg.pinv(H)
    return LogisticFit(beta, Hinv @ (g.T @ g) @ Hinv, bool(res.success))


def instruction_difficulty(P: np.ndarray, F: np.ndarray, *, l2: float = 0.1) -> np.ndarray:
    """(N,) per-prompt difficulty from S systems' preferences P (S, N) and length features F (S, N).

    Fits ``logit q_{s,x} = theta_s + phi_s F_{s,x} + gamma_x`` to all S*N soft preferences with an L2
    penalty ``l2`` on gamma (which also pins its level), and returns gamma centred to mean 0. A high
    gamma means the evaluated systems do well on that prompt (an easy prompt for them).
    """
    P = np.asarray(P, dtype=np.float64)
    F = np.asarray(F, dtype=np.float64)
    if P.ndim != 2 or P.shape != F.shape:
        raise ValueError(f"P and F must both be (S, N), got {P.shape} and {F.shape}")
    S, N = P.shape
    # design: [one-hot system (S) | one-hot system * F (S) | one-hot prompt (N)], rows s*N + x
    rows = S * N
    X = np.zeros((rows, 2 * S + N))
    r = np.arange(rows)
    s_idx, x_idx = r // N, r % N
    X[r, s_idx] = 1.0
    X[r, S + s_idx] = F.reshape(-1)
    X[r, 2 * S + x_idx] = 1.0
    pen = np.concatenate([np.zeros(2 * S), np.full(N, float(l2))])
    fit = fit_soft_logistic(X, P.reshape(-1), l2=pen)
    gamma = fit.coef[2 * S:]
    return gamma - gamma.mean()


def separation_direction(X: np.ndarray, p: Sequence[float], *, tol: float = 1e-7) -> np.ndarray | None:
    """A direction ``b`` (K,) along which the soft-target logistic likelihood of ``X`` (N, K) and ``p`` (N,)
    keeps rising forever, or None when the maximum-likelihood fit is finite (no separation).

    A row with ``p == 1`` acts as a success, ``p == 0`` as a failure, ``0 < p < 1`` as both (a soft target
    is a weighted success and failure). The fit has no finite maximum iff some ``b`` has ``x_i b >= 0`` on
    successes-only rows, ``x_i b <= 0`` on failures-only rows, ``x_i b == 0`` on soft rows, and at least one
    strict inequality (complete or quasi-complete separation: Albert & Anderson 1984, Biometrika 71(1);
    the linear program of Konis 2007). We solve ``max sum_i s_i x_i b`` over the hard rows (``s_i = +1 / -1``)
    under those constraints with ``-1 <= b_k <= 1`` (scipy's HiGHS); an optimum above ``tol`` is separation.
    Example: 8 prompts where the longer answer always wins: ``b = (0, 1)`` (intercept 0, length 1) works.
    """
    from scipy.optimize import linprog

    X = np.asarray(X, dtype=np.float64)
    y = _pref(p, "targets")
    hard1, hard0 = y >= 1.0 - 1e-12, y <= 1e-12
    soft = ~(hard1 | hard0)
    if not (hard1.any() or hard0.any()):
        return None
    sign = np.where(hard1, 1.0, -1.0)[hard1 | hard0]
    Xh = X[hard1 | hard0] * sign[:, None]  # want Xh b >= 0
    c = -Xh.sum(axis=0)  # maximise the total margin
    res = linprog(c, A_ub=-Xh, b_ub=np.zeros(Xh.shape[0]),
                  A_eq=X[soft] if soft.any() else None, b_eq=np.zeros(int(soft.sum())) if soft.any() else None,
                  bounds=[(-1.0, 1.0)] * X.shape[1], method="highs")
    if res.status != 0 or -res.fun <= tol:
        return None
    return res.x


def separation_reason(pref: Sequence[float], feature: Sequence[float]) -> str:
    """What separates the verdicts, in words that are true for the data (for ``lc_win_rate``'s reason).

    pref (N,): preferences in [0, 1] (1 a win, 0 a loss, anything else a tie or soft verdict); feature (N,):
    the length term (``length_feature``). "all 8 decided verdicts are wins" when there is no loss (or no
    win); "the length difference separates the 3 wins from the 5 losses perfectly (...)" when every win's
    length term is at least (or at most) every loss's; else a combination of the terms does.
    """
    p = _pref(pref)
    f = np.asarray(feature, dtype=np.float64)
    win, loss = p >= 1.0 - 1e-12, p <= 1e-12
    nw, nl, other = int(win.sum()), int(loss.sum()), int((~(win | loss)).sum())
    rest = "" if not other else " (the other one is a tie or soft)" if other == 1 else \
        f" (the other {other} are ties or soft)"
    if nl == 0 or nw == 0:
        return f"all {nw + nl} decided verdicts are {'wins' if nl == 0 else 'losses'}{rest}"
    head = f"the length difference separates the {nw} win{'s' if nw != 1 else ''} from the {nl} loss" \
           f"{'es' if nl != 1 else ''} perfectly"
    if f[win].min() >= f[loss].max():
        return head + " (no loss has a relatively longer output than a win: the longer answer wins)"
    if f[win].max() <= f[loss].min():
        return head + " (no loss has a relatively shorter output than a win: the shorter answer wins)"
    return f"the model's terms together separate the {nw} wins from the {nl} losses perfectly"


def _not_estimable(reason: str) -> LCWinRate:
    return LCWinRate(math.nan, math.nan, {}, LC_NOT_ESTIMABLE, reason)


def lc_win_rate(pref: Sequence[float], len_out: Sequence[float], len_ref: Sequence[float],
                difficulty: Sequence[float] | None = None) -> LCWinRate:
    """AlpacaEval 2's length-controlled win rate of one system (Dubois et al. 2024, eq. 3-4).

    pref (N,): preferences in [0, 1]; len_out / len_ref (N,): lengths of the system's and the
    reference's outputs (characters); difficulty (N,): optional per-prompt term (``instruction_difficulty``),
    only meaningful when estimated from several systems. Returns ``mean_x s(theta [+ psi gamma_x])``,
    i.e. the GLM's prediction with the length term set to zero, and its delta-method SE.

    Not estimable (``status == "not estimable"``, NaN value and SE, ``reason`` set) for fewer than 2
    prompts, under separation (``separation_direction``: the coefficients run off to infinity and the
    "estimate" is whatever the optimiser stopped at, e.g. 0.0% with SE 0.0 for 8 prompts that the longer
    answer always wins), or when the optimiser does not converge.
    """
    p = _pref(pref)
    n = p.size
    if n < 2:
        return _not_estimable(f"{n} prompt{'s' if n != 1 else ''}: the GLM needs at least 2")
    f = length_feature(len_out, len_ref)
    if f.shape != p.shape:
        raise ValueError(f"lengths and preferences differ in size: {f.size} vs {n}")
    cols, names = [np.ones(n), f], ["intercept", "length"]
    if difficulty is not None:
        d = np.asarray(difficulty, dtype=np.float64)
        if d.shape != p.shape:
            raise ValueError(f"difficulty has {d.size} values for {n} prompts")
        cols.append(d)
        names.append("difficulty")
    X = np.column_stack(cols)
    sep = separation_direction(X, p)
    if sep is not None:
        return _not_estimable(f"separation: {separation_reason(p, f)} on these {n} prompts, so the GLM's "
                              "coefficients have no finite estimate (more prompts, or soft preferences, make it "
                              "estimable)")
    fit = fit_soft_logistic(X, p)
    if not fit.converged:
        return _not_estimable("the GLM's optimiser did not converge")
    X0 = X.copy()
    X0[:, 1] = 0.0  # length term at zero
    q0 = _sigmoid(X0 @ fit.coef)
    grad = (X0 * (q0 * (1 - q0))[:, None]).mean(axis=0)  # d mean(q0) / d beta
    var = float(grad @ fit.cov @ grad)
    coef = dict(zip(names, map(float, fit.coef)))
    big = {k: v for k, v in coef.items() if k != "intercept" and abs(v) > UNSTABLE_COEF}
    status, reason = LC_OK, None
    if big:
        k, v = max(big.items(), key=lambda kv: abs(kv[1]))
        status, reason = LC_UNSTABLE, (f"near separation: the {k} coefficient is {v:.1f} on the logit scale (over "
                                       f"{UNSTABLE_COEF:g}), so the verdicts nearly follow {k}; the LC win rate "
                                       "and its SE are not reliable")
    return LCWinRate(float(q0.mean()), math.sqrt(max(var, 0.0)), coef, status, reason)


def lc_win_rates(P: np.ndarray, L_out: np.ndarray, len_ref: Sequence[float], *, l2: float = 0.1) -> list[LCWinRate]:
    """Length-controlled win rates of S systems (P, L_out: (S, N)) against one reference (len_ref: (N,)).

    The difficulty term is ``instruction_difficulty`` of all S systems (needs S >= 2; with S == 1 the
    single-system model without it is used).
    """
    P = np.asarray(P, dtype=np.float64)
    L_out = np.asarray(L_out, dtype=np.float64)
    ref = np.asarray(len_ref, dtype=np.float64)
    if P.ndim != 2 or P.shape != L_out.shape or ref.shape != (P.shape[1],):
        raise ValueError(f"P and L_out must be (S, N) and len_ref (N,), got {P.shape}, {L_out.shape}, {ref.shape}")
    if P.shape[0] < 2:
        return [lc_win_rate(P[0], L_out[0], ref)]
    F = np.stack([length_feature(L_out[s], ref) for s in range(P.shape[0])])
    gamma = instruction_difficulty(P, F, l2=l2)
    return [lc_win_rate(P[s], L_out[s], ref, difficulty=gamma) for s in range(P.shape[0])]
