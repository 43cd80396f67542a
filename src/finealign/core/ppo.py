"""PPO math for per-token rewards: pure functions over tensors, no models, no I/O.

Notation: B rows (responses), T response tokens (right-padded), V vocabulary. A ``mask`` is a
(B, T) tensor of 0/1 (float or bool) marking each row's valid response tokens; every row's valid
tokens form a prefix (the response up to and including its end-of-sequence token).

The pieces, in the order a PPO step uses them:

* ``kl_per_token`` and ``assemble_rewards``: ``R_t = alpha * r_t - beta * kl_t`` per token, with the
  k1 (``log pi - log pi_ref``) or k3 (``exp(-d) - 1 + d``) estimator; ``place_at_last`` puts a
  sequence-level score on each row's last valid token (the sequence-level baseline).
* ``gae``: generalised advantage estimation by a reverse scan over T (vectorised over B).
* ``group_advantages``: critic-free advantages for k responses per prompt: each token's reward-to-go
  minus the leave-one-out mean return of its group (RLOO, one baseline per response);
  ``token_group_advantages``: the per-token leave-one-out baseline of PRIME (outcome on the stop token
  against the others' outcomes, dense rewards against the others' per-token mean);
  ``reinforce_pp_advantages``: rewards-to-go normalised over the batch (REINFORCE++).
* ``masked_mean`` / ``masked_var`` / ``masked_whiten``: statistics over valid tokens only.
* ``policy_loss`` (clipped surrogate), ``value_loss`` (clipped), ``entropy_from_logits``.
* ``update_kl_coef``: the adaptive KL controller of Ziegler et al. (2019) as a pure update.

Losses sum over valid tokens and divide by ``num_tokens`` when it is given (the token count of the
whole minibatch), so gradients of micro-batches add up exactly to the gradient of the minibatch
(gradient accumulation is exact); without it they divide by the micro-batch's own token count.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

KL_ESTIMATORS = ("k1", "k3")


# --------------------------------------------------------------------------- masked statistics


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over ``mask == 1``. x, mask: (B, T). Returns a scalar, or (B,) / (T,) with ``dim``.

    Masked positions are zeroed with ``where`` (not multiplied), so a NaN/inf there changes nothing.
    """
    m = mask.bool()
    z = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return z.sum() if dim is None else z.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over ``mask == 1``. x, mask: (B, T). Scalar, or reduced along ``dim``.

    An all-masked input (or row, with ``dim``) gives 0, not NaN.
    """
    n = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim=dim)
    return masked_sum(x, mask, dim) / n.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over ``mask == 1`` (scalar). x, mask: (B, T).

    ``unbiased`` applies Bessel's correction n / (n - 1) (no correction when n <= 1).
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` with the statistics of the valid tokens. x, mask: (B, T) -> (B, T).

    With ``shift_mean=False`` the mean is added back (scale only: used for rewards). Masked
    positions of the output are 0.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, torch.zeros((), dtype=out.dtype, device=out.device))


# --------------------------------------------------------------------------- rewards


class TokenRewards(NamedTuple):
    """Per-token rewards of a batch. All (B, T); zero at masked positions."""

    rewards: torch.Tensor  # R_t = alpha * score_t - beta * kl_t
    score: torch.Tensor  # alpha * score_t (the reward model's part)
    kl: torch.Tensor  # kl_t under the chosen estimator (before beta)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL estimate between policy and reference at the sampled tokens. (B, T) -> (B, T).

    d = log pi(y_t) - log pi_ref(y_t). k1 = d (unbiased, can be negative); k3 = exp(-d) - 1 + d
    (unbiased for KL(pi || pi_ref) under samples of pi, always >= 0; Schulman 2020).
    """
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"unknown KL estimator {estimator!r}; use one of {KL_ESTIMATORS}")


def place_at_last(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put one score per row on its last valid token. scores: (B,), mask: (B, T) -> (B, T).

    A row without valid tokens gets nothing.
    """
    m = mask.bool()
    T = m.shape[1]
    pos = torch.arange(T, device=m.device).expand_as(m)
    last = torch.where(m, pos, torch.full_like(pos, -1)).max(dim=1).values  # (B,)
    out = torch.zeros(m.shape, dtype=scores.dtype, device=scores.device)
    has = last >= 0
    rows = torch.nonzero(has).squeeze(-1)
    out[rows, last[rows]] = scores[rows]
    return out


def assemble_rewards(
    score_rewards: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 0.1,
    estimator: str = "k1",
) -> TokenRewards:
    """``R_t = alpha * r_t - beta * kl_t`` on valid tokens. All inputs (B, T); returns ``TokenRewards``.

    ``score_rewards`` holds the reward model's r_t: per token (fine-grained) or one score on the
    last valid token (``place_at_last``; sequence level). Masked positions are 0 whatever the inputs
    hold there.
    """
    kl = kl_per_token(logprobs, ref_logprobs, estimator)
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    m = mask.bool()
    score = torch.where(m, alpha * score_rewards.to(logprobs.dtype), zero)
    kl = torch.where(m, kl, zero)
    return TokenRewards(rewards=score - beta * kl, score=score, kl=kl)


# --------------------------------------------------------------------------- advantages


class Advantages(NamedTuple):
    """GAE output, both (B, T), zero at masked positions."""

    advantages: torch.Tensor
    returns: torch.Tensor  # advantages + values: the value targets


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95) -> Advantages:
    """Generalised advantage estimation. rewards, values, mask: (B, T) -> ``Advantages``.

    delta_t = R_t + gamma * V_{t+1} - V_t (V_{t+1} = 0 after the last valid token);
    A_t = delta_t + gamma * lam * A_{t+1}. A reverse scan over T, vectorised over B. Values and
    rewards at masked positions are ignored.
    """
    m = mask.to(values.dtype)
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    r = torch.where(mask.bool(), rewards.to(values.dtype), zero)
    v = torch.where(mask.bool(), values, zero)
    B, T = v.shape
    adv = torch.zeros_like(v)
    next_adv = torch.zeros(B, dtype=v.dtype, device=v.device)
    next_v = torch.zeros(B, dtype=v.dtype, device=v.device)
    next_m = torch.zeros(B, dtype=v.dtype, device=v.device)
    for t in range(T - 1, -1, -1):
        delta = r[:, t] + gamma * next_v * next_m - v[:, t]
        next_adv = delta + gamma * lam * next_m * next_adv
        adv[:, t] = next_adv * m[:, t]
        next_v, next_m = v[:, t], m[:, t]
    return Advantages(advantages=adv, returns=torch.where(mask.bool(), adv + v, zero))


def rewards_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``G_t = sum_{s >= t} gamma^(s - t) R_s`` over valid tokens. rewards, mask: (B, T) -> (B, T), 0 where masked."""
    r = rewards if rewards.is_floating_point() else rewards.float()
    return gae(r, torch.zeros_like(r), mask, gamma, 1.0).advantages  # GAE with V = 0 and lambda = 1


def group_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int, gamma: float = 1.0) -> Advantages:
    """Critic-free advantages for ``group_size`` (k) responses per prompt. rewards, mask: (B, T) -> ``Advantages``.

    Rows ``g*k .. g*k + k - 1`` answer the same prompt. ``A^i_t = G^i_t - b^i`` with ``G^i_t`` the
    reward-to-go of row i (``rewards_to_go``) and ``b^i = mean_{j != i} G^j_0`` the mean return of the
    other rows of its group: the leave-one-out baseline of RLOO (Kool et al. 2019; Ahmadian et al. 2024),
    which depends on no action of row i, so the estimate stays unbiased while per-token rewards still
    reach only the tokens before them (a token is not credited with rewards earned earlier in its
    response). ``returns`` are ``G_t`` (unused without a critic). Raises ``ValueError`` when k < 2 or
    B is not a multiple of k.
    """
    B = rewards.shape[0]
    _check_groups(B, group_size)
    g = rewards_to_go(rewards, mask, gamma)
    baseline = _leave_one_out(g[:, 0], group_size).reshape(B, 1)  # mean return G_0 of the others
    adv = torch.where(mask.bool(), g - baseline, torch.zeros((), dtype=g.dtype, device=g.device))
    return Advantages(advantages=adv, returns=g)


def last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last valid token (its stop token, or the last kept token of a truncated
    response). mask: (B, T) -> (B,) long; -1 for a row without valid tokens."""
    m = mask.bool()
    pos = torch.arange(m.shape[1], device=m.device).expand_as(m)
    return torch.where(m, pos, torch.full_like(pos, -1)).max(dim=1).values


def _check_groups(B: int, group_size: int) -> None:
    if group_size < 2 or B % group_size:
        raise ValueError(f"group advantages need k >= 2 responses per prompt and B a multiple of k; got B={B}, k={group_size}")


def _leave_one_out(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean of the other rows of each row's group. x: (B,) -> (B,)."""
    g = x.reshape(-1, group_size)
    return ((g.sum(1, keepdim=True) - g) / (group_size - 1)).reshape(-1)


def token_group_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int,
                           gamma: float = 1.0) -> Advantages:
    """Critic-free advantages with a per-token leave-one-out baseline (PRIME, Cui et al. 2025, eq. 5-6).
    rewards, mask: (B, T) -> ``Advantages``; rows ``g*k .. g*k + k - 1`` answer one prompt.

    Each row's rewards are split where the token-reward contract puts them: the *outcome* o^i, the
    reward of its last valid token (the stop token: what is judged on the whole response), and the
    *dense* rewards d^i_t of its other tokens. The outcome gets RLOO's baseline, the dense rewards a
    per-token one, the mean dense reward per token of the group's other rows:

        b^i  = mean_{j != i} (sum_t d^j_t / n^j)       (n^j: dense tokens of row j, at least 1)
        R'^i_t = d^i_t - b^i  (t < last)              R'^i_last = o^i - mean_{j != i} o^j
        A^i_t = sum_{s >= t} gamma^(s - t) R'^i_s

    So a token after a penalty is no longer credited with the whole gap between its response's
    remaining return and the other responses' total return (RLOO's one constant per response), only with
    the dense rewards still to come relative to the others' per-token rate. Rewards that are all on the
    stop token (a sequence score) give exactly sequence-level RLOO. ``returns`` are the plain
    rewards-to-go G_t. Raises ``ValueError`` when k < 2 or B is not a multiple of k.
    """
    B, T = rewards.shape
    _check_groups(B, group_size)
    m = mask.bool()
    r = rewards if rewards.is_floating_point() else rewards.float()
    r = torch.where(m, r, torch.zeros((), dtype=r.dtype, device=r.device))
    last = last_valid_index(m)  # (B,)
    has = last >= 0
    rows = torch.arange(B, device=r.device)
    is_last = torch.zeros_like(m)
    is_last[rows[has], last[has]] = True
    dense_mask = m & ~is_last
    outcome = torch.where(has, r[rows, last.clamp(min=0)], torch.zeros((), dtype=r.dtype, device=r.device))
    dense = torch.where(dense_mask, r, torch.zeros((), dtype=r.dtype, device=r.device))
    per_token = dense.sum(1) / dense_mask.sum(1).clamp(min=1).to(r.dtype)  # (B,)
    b = _leave_one_out(per_token, group_size)
    adjusted = torch.where(dense_mask, dense - b[:, None], torch.zeros((), dtype=r.dtype, device=r.device))
    o_adv = outcome - _leave_one_out(outcome, group_size)
    adjusted[rows[has], last[has]] = o_adv[has]
    adv = rewards_to_go(adjusted, m, gamma)
    return Advantages(advantages=adv, returns=rewards_to_go(r, m, gamma))


def reinforce_pp_advantages(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> Advantages:
    """REINFORCE++ advantages (Hu 2025): each token's reward-to-go, normalised over the whole batch.
    rewards, mask: (B, T) -> ``Advantages``.

    ``A_t = (G_t - mean(G)) / std(G)`` with mean and std over every valid token of the batch (no
    per-prompt baseline, no critic); ``returns`` are G_t.
    """
    g = rewards_to_go(rewards, mask, gamma)
    return Advantages(advantages=masked_whiten(g, mask), returns=g)


# --------------------------------------------------------------------------- losses


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # scalar, to minimise
    clipfrac: torch.Tensor  # share of valid tokens where the clipped term was taken
    approx_kl: torch.Tensor  # mean of (ratio - 1) - log ratio: KL(old || new) estimate
    ratio: torch.Tensor  # mean probability ratio


def _normalise(total: torch.Tensor, mask: torch.Tensor, num_tokens: float | None) -> torch.Tensor:
    n = mask.to(total.dtype).sum().clamp(min=1.0) if num_tokens is None else max(float(num_tokens), 1.0)
    return total / n


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    num_tokens: float | None = None,
) -> PolicyLoss:
    """Clipped surrogate: mean over valid tokens of max(-A * ratio, -A * clip(ratio, 1 - c, 1 + c)).

    All inputs (B, T); ratio = exp(logprobs - old_logprobs). ``num_tokens``: divide the token sum by
    this count (the whole minibatch's) instead of this batch's own count.
    """
    m = mask.bool()
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    log_ratio = torch.where(m, logprobs - old_logprobs, zero)
    ratio = torch.exp(log_ratio)
    a = torch.where(m, advantages, zero)
    unclipped = -a * ratio
    clipped = -a * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    per_token = torch.maximum(unclipped, clipped)
    loss = _normalise(masked_sum(per_token, m), m, num_tokens)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(logprobs.dtype), m)
        approx_kl = masked_mean((ratio - 1) - log_ratio, m)
        mean_ratio = masked_mean(ratio, m)
    return PolicyLoss(loss, clipfrac, approx_kl, mean_ratio)


class ValueLoss(NamedTuple):
    loss: torch.Tensor  # scalar: 0.5 * mean of max(squared errors)
    clipfrac: torch.Tensor  # share of valid tokens where the clipped error was larger


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
    num_tokens: float | None = None,
) -> ValueLoss:
    """Clipped value loss: 0.5 * mean over valid tokens of max((V - G)^2, (V_clip - G)^2).

    All inputs (B, T); V_clip = old_V + clamp(V - old_V, -clip, clip), G the returns. ``clip`` None
    (or <= 0): no clipping, 0.5 * mean (V - G)^2 (a fresh critic far from the returns' scale is not
    held back to ``clip`` per batch).
    """
    if clip is None or clip <= 0:
        clip = float("inf")
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    v = torch.where(m, values, zero)
    ov = torch.where(m, old_values, zero)
    g = torch.where(m, returns, zero)
    v_clip = ov + torch.clamp(v - ov, -clip, clip)
    e1, e2 = (v - g) ** 2, (v_clip - g) ** 2
    loss = 0.5 * _normalise(masked_sum(torch.maximum(e1, e2), m), m, num_tokens)
    with torch.no_grad():
        clipfrac = masked_mean((e2 > e1).to(values.dtype), m)
    return ValueLoss(loss, clipfrac)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of each position. logits: (..., V) -> (...), e.g. (B, T, V) -> (B, T).

    H = logsumexp(z) - sum softmax(z) * z.
    """
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per position. logits: (..., V), tokens: (...) long -> (...), e.g.
    (B, T, V) and (B, T) -> (B, T).

    Computed as z[token] - logsumexp(z): unlike ``log_softmax(z).gather(...)`` it keeps no second
    (..., V) tensor for the backward pass (the PPO update's largest activation after the logits).
    """
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


# --------------------------------------------------------------------------- KL controller


def update_kl_coef(coef: float, observed_kl: float, target: float | None, horizon: int, n_steps: int) -> float:
    """Adaptive KL (Ziegler et al. 2019): coef * (1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon).

    ``observed_kl``: mean per-sequence KL of the last batch; ``n_steps``: rollouts in that batch.
    ``target=None`` is a fixed coefficient (returned unchanged).
    """
    if target is None:
        return coef
    err = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + err * n_steps / horizon)
