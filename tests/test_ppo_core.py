"""PPO math: hand-worked numbers (arithmetic in comments) and invariants."""

from __future__ import annotations

import math

import pytest
import torch

from finealign.core.ppo import (assemble_rewards, entropy_from_logits, gae, kl_per_token, logprobs_from_logits,
                                masked_mean, masked_var, masked_whiten, place_at_last, policy_loss, update_kl_coef,
                                value_loss)
from finealign.core.token_map import decode_offsets, map_token_rewards


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------- hand-worked


def test_masked_stats_by_hand():
    x = t([1.0, 2.0, 100.0], [3.0, 4.0, 5.0])
    m = t([1, 1, 0], [1, 1, 1])
    # valid: 1, 2, 3, 4, 5 -> mean 15 / 5 = 3; squared deviations 4 + 1 + 0 + 1 + 4 = 10
    assert masked_mean(x, m).item() == pytest.approx(3.0)
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(10 / 5)
    assert masked_var(x, m).item() == pytest.approx(10 / 4)  # Bessel: 2 * 5 / 4
    # per row: (1 + 2) / 2 = 1.5 ; (3 + 4 + 5) / 3 = 4
    assert masked_mean(x, m, dim=1).tolist() == pytest.approx([1.5, 4.0])
    w = masked_whiten(x, m)
    # (x - 3) / sqrt(2.5): 1 -> -2 / 1.5811 = -1.2649
    assert w[0, 0].item() == pytest.approx(-2 / math.sqrt(2.5), rel=1e-6)
    assert w[0, 2].item() == 0.0
    assert masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(w, m).item() == pytest.approx(1.0, rel=1e-6)


def test_kl_estimators_by_hand():
    lp, ref = t([math.log(0.5)]), t([math.log(0.25)])
    # d = log 0.5 - log 0.25 = log 2 = 0.693147
    assert kl_per_token(lp, ref, "k1").item() == pytest.approx(math.log(2))
    # k3 = exp(-d) - 1 + d = 0.5 - 1 + 0.693147 = 0.193147
    assert kl_per_token(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + math.log(2))
    with pytest.raises(ValueError):
        kl_per_token(lp, ref, "k2")


def test_assemble_rewards_by_hand():
    score = t([0.0, 1.0, 7.0])
    lp, ref = t([-1.0, -2.0, 0.0]), t([-1.5, -1.0, 0.0])
    m = t([1, 1, 0])
    out = assemble_rewards(score, lp, ref, m, alpha=2.0, beta=0.1, estimator="k1")
    # kl = lp - ref = [0.5, -1.0, masked]; R = 2 * score - 0.1 * kl
    # t0: 2 * 0 - 0.1 * 0.5 = -0.05 ; t1: 2 * 1 - 0.1 * (-1) = 2.1 ; t2 masked -> 0 (the 7 is ignored)
    assert out.rewards[0].tolist() == pytest.approx([-0.05, 2.1, 0.0])
    assert out.score[0].tolist() == pytest.approx([0.0, 2.0, 0.0])
    assert out.kl[0].tolist() == pytest.approx([0.5, -1.0, 0.0])


def test_place_at_last():
    m = t([1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0])
    out = place_at_last(torch.tensor([5.0, 6.0, 7.0], dtype=torch.float64), m)
    # row 0 ends at index 1, row 1 at index 3, row 2 has no valid token
    assert out.tolist() == [[0, 5, 0, 0], [0, 0, 0, 6], [0, 0, 0, 0]]


def test_gae_by_hand():
    r, v, m = t([1.0, 0.0, 2.0]), t([0.5, 1.0, 1.0]), t([1, 1, 1])
    a = gae(r, v, m, gamma=1.0, lam=0.5)
    # t=2: delta = 2 + 0 - 1 = 1                  A2 = 1
    # t=1: delta = 0 + 1 * 1 - 1 = 0              A1 = 0 + 0.5 * 1 = 0.5
    # t=0: delta = 1 + 1 * 1 - 0.5 = 1.5          A0 = 1.5 + 0.5 * 0.5 = 1.75
    assert a.advantages[0].tolist() == pytest.approx([1.75, 0.5, 1.0])
    # returns = A + V = [2.25, 1.5, 2.0]
    assert a.returns[0].tolist() == pytest.approx([2.25, 1.5, 2.0])
    # gamma = 0.9, lam = 1, rewards only at the end: A0 = 0.9^2 * 2 - 0.5 ... computed by hand:
    # t=2: 2 - 1 = 1; t=1: 0 + 0.9 * 1 - 1 = -0.1, A1 = -0.1 + 0.9 * 1 = 0.8; t=0: 1 + 0.9 * 1 - 0.5 = 1.4,
    # A0 = 1.4 + 0.9 * 0.8 = 2.12
    a = gae(r, v, m, gamma=0.9, lam=1.0)
    assert a.advantages[0].tolist() == pytest.approx([2.12, 0.8, 1.0])


def test_group_advantages_by_hand():
    from finealign.core.ppo import group_advantages, rewards_to_go

    r = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 5.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    # rewards-to-go (gamma 1): row0 [3, 2, 2]; row1 [1, 1, 0] (the 5 is masked); row2 [4, 0, 0]; row3 [0, 0, 0]
    assert rewards_to_go(r, m).tolist() == [[3, 2, 2], [1, 1, 0], [4, 0, 0], [0, 0, 0]]
    a = group_advantages(r, m, group_size=2)
    # groups (row0, row1) and (row2, row3); leave-one-out baseline = the other row's G_0:
    # row0 [3, 2, 2] - 1 = [2, 1, 1]; row1 [1, 1, -] - 3 = [-2, -2, 0]; row2 [4, -, -] - 0 = [4, 0, 0];
    # row3 [0, 0, 0] - 4 = [-4, -4, -4]
    assert a.advantages.tolist() == [[2, 1, 1], [-2, -2, 0], [4, 0, 0], [-4, -4, -4]]
    # k = 4 (one group): row0's baseline = (1 + 4 + 0) / 3 = 5/3, so A0 = 3 - 5/3 = 4/3
    assert group_advantages(r, m, 4).advantages[0, 0].item() == pytest.approx(4 / 3)
    # gamma 0.5, row0: G = [1 + 0.5 * 0 + 0.25 * 2, 0 + 0.5 * 2, 2] = [1.5, 1, 2]
    assert rewards_to_go(r, m, gamma=0.5)[0].tolist() == pytest.approx([1.5, 1.0, 2.0])
    with pytest.raises(ValueError, match="k >= 2"):
        group_advantages(r, m, 3)
    with pytest.raises(ValueError, match="k >= 2"):
        group_advantages(r, m, 1)


def test_policy_loss_by_hand():
    lp, old = t([math.log(1.5), math.log(0.5)]), t([0.0, 0.0])
    adv, m = t([1.0, -1.0]), t([1, 1])
    out = policy_loss(lp, old, adv, m, clip=0.2)
    # ratios 1.5, 0.5. tok0: max(-1 * 1.5, -1 * 1.2) = -1.2 (clipped); tok1: max(1 * 0.5, 1 * 0.8) = 0.8 (clipped)
    # loss = (-1.2 + 0.8) / 2 = -0.2; clipfrac = 2 / 2
    assert out.loss.item() == pytest.approx(-0.2)
    assert out.clipfrac.item() == pytest.approx(1.0)
    # approx_kl = mean((r - 1) - log r) = ((0.5 - 0.405465) + (-0.5 + 0.693147)) / 2 = 0.143841
    assert out.approx_kl.item() == pytest.approx(((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2)


def test_value_loss_by_hand():
    v, ov, g, m = t([1.0, 0.0]), t([0.5, 0.0]), t([2.0, 1.0]), t([1, 1])
    out = value_loss(v, ov, g, m, clip=0.2)
    # tok0: (1 - 2)^2 = 1; clipped V = 0.5 + 0.2 = 0.7 -> (0.7 - 2)^2 = 1.69; max 1.69
    # tok1: (0 - 1)^2 = 1 both ways; loss = 0.5 * (1.69 + 1) / 2 = 0.6725; clipfrac 1 / 2
    assert out.loss.item() == pytest.approx(0.6725)
    assert out.clipfrac.item() == pytest.approx(0.5)


def test_entropy_and_logprobs():
    logits = torch.zeros(1, 2, 4, dtype=torch.float64)
    logits[0, 1] = torch.tensor([0.0, 0.0, -1e9, -1e9])
    h = entropy_from_logits(logits)
    # uniform over 4 -> log 4 = 1.386294; uniform over 2 -> log 2
    assert h[0].tolist() == pytest.approx([math.log(4), math.log(2)])
    lp = logprobs_from_logits(logits, torch.tensor([[3, 1]]))
    assert lp[0].tolist() == pytest.approx([math.log(0.25), math.log(0.5)])


def test_kl_controller_by_hand():
    # kl 12 vs target 6: error clipped to +0.2; 0.1 * (1 + 0.2 * 100 / 10000) = 0.1002
    assert update_kl_coef(0.1, 12.0, 6.0, 10000, 100) == pytest.approx(0.1002)
    # kl 5.4 vs target 6: error 5.4 / 6 - 1 = -0.1; 0.1 * (1 - 0.1 * 0.5) = 0.095
    assert update_kl_coef(0.1, 5.4, 6.0, 100, 50) == pytest.approx(0.095)
    assert update_kl_coef(0.1, 100.0, None, 100, 50) == 0.1  # fixed


# --------------------------------------------------------------------------- invariants


def _batch(seed=0, B=5, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).double()
    rnd = lambda: torch.randn(B, T, generator=g, dtype=torch.float64)  # noqa: E731
    return mask, rnd


def test_masked_positions_change_nothing():
    mask, rnd = _batch()
    r, v, lp, old, ref, ov = rnd(), rnd(), rnd(), rnd(), rnd(), rnd()
    junk = torch.where(mask.bool(), torch.zeros_like(r), torch.full_like(r, float("nan")))
    a1, a2 = gae(r, v, mask, 1.0, 0.95), gae(r + junk, v + junk, mask, 1.0, 0.95)
    assert torch.equal(a1.advantages, a2.advantages) and torch.equal(a1.returns, a2.returns)
    p1 = policy_loss(lp, old, a1.advantages, mask)
    p2 = policy_loss(lp + junk, old - junk, a1.advantages + junk, mask)
    assert p1.loss.item() == p2.loss.item() and p1.clipfrac.item() == p2.clipfrac.item()
    v1 = value_loss(v, ov, a1.returns, mask)
    v2 = value_loss(v + junk, ov + junk, a1.returns + junk, mask)
    assert v1.loss.item() == v2.loss.item()
    r1 = assemble_rewards(r, lp, ref, mask, estimator="k3")
    r2 = assemble_rewards(r + junk, lp + junk, ref, mask, estimator="k3")
    assert torch.equal(r1.rewards, r2.rewards)
    assert torch.equal(masked_whiten(r, mask), masked_whiten(r + junk, mask))


def _gae_loop(r, v, mask, gamma, lam):
    B, T = r.shape
    adv = torch.zeros_like(r)
    for b in range(B):
        n = int(mask[b].sum())
        last = 0.0
        for i in reversed(range(n)):
            nv = v[b, i + 1].item() if i + 1 < n else 0.0
            delta = r[b, i].item() + gamma * nv - v[b, i].item()
            last = delta + gamma * lam * last
            adv[b, i] = last
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 1.0), (0.99, 0.0)])
def test_vectorised_gae_equals_loop(gamma, lam):
    mask, rnd = _batch(seed=3, B=6, T=9)
    r, v = rnd(), rnd()
    out = gae(r, v, mask, gamma, lam)
    assert torch.allclose(out.advantages, _gae_loop(r, v, mask, gamma, lam), atol=1e-12)
    assert torch.allclose(out.returns, (out.advantages + v) * mask, atol=1e-12)


def test_sequence_placement_preserves_total():
    mask, rnd = _batch(seed=5)
    token = rnd() * mask
    seq = place_at_last(token.sum(dim=1), mask)
    assert torch.allclose(seq.sum(dim=1), token.sum(dim=1))
    assert ((seq != 0).sum(dim=1) <= 1).all()


def test_batch_8_equals_8_accumulation_steps():
    torch.manual_seed(0)
    B, T, H, V = 8, 6, 5, 11
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.tensor([1, 6, 3, 4, 6, 2, 5, 6])
    mask = (torch.arange(T)[None] < lengths[:, None]).double()
    old_lp = torch.randn(B, T, generator=g, dtype=torch.float64) - 2
    old_v = torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    ret = torch.randn(B, T, generator=g, dtype=torch.float64)
    w = torch.randn(H, V, generator=g, dtype=torch.float64, requires_grad=True)
    u = torch.randn(H, generator=g, dtype=torch.float64, requires_grad=True)

    def loss_of(idx, n_tokens):
        logits = feats[idx] @ w
        lp = logprobs_from_logits(logits, tokens[idx])
        vals = feats[idx] @ u
        pl = policy_loss(lp, old_lp[idx], adv[idx], mask[idx], 0.2, n_tokens)
        vl = value_loss(vals, old_v[idx], ret[idx], mask[idx], 0.2, n_tokens)
        return pl.loss + 0.5 * vl.loss

    n = mask.sum().item()
    full = torch.autograd.grad(loss_of(slice(None), n), [w, u])
    acc = [torch.zeros_like(w), torch.zeros_like(u)]
    for i in range(B):
        gi = torch.autograd.grad(loss_of(slice(i, i + 1), n), [w, u])
        acc = [a + b for a, b in zip(acc, gi)]
    for a, b in zip(full, acc):
        assert torch.allclose(a, b, atol=1e-12)
    # without a shared token count the micro-batch means weigh rows differently (the reason it exists)
    uneq = [torch.zeros_like(w), torch.zeros_like(u)]
    for i in range(B):
        gi = torch.autograd.grad(loss_of(slice(i, i + 1), None), [w, u])
        uneq = [a + b / B for a, b in zip(uneq, gi)]
    assert not torch.allclose(full[0], uneq[0], atol=1e-6)


# --------------------------------------------------------------------------- token map


def test_map_token_rewards_by_hand():
    # scorer: "Hello" (0, 5) -> 1.0, " world" (5, 11) -> 2.0
    # policy: "Hel" (0, 3), "lo" (3, 5), " wor" (5, 9), "ld" (9, 11)
    # each scorer reward lands on the policy token holding its last character: 4 -> "lo", 10 -> "ld"
    out = map_token_rewards([(0, 5), (5, 11)], [1.0, 2.0], [(0, 3), (3, 5), (5, 9), (9, 11)])
    assert out == [0.0, 1.0, 0.0, 2.0]
    # policy coarser than scorer: both land on one token
    assert map_token_rewards([(0, 2), (2, 5)], [1.0, 0.5], [(0, 5)]) == [1.5]
    # scorer text longer than the policy's (char 12 past the end): goes to the last token
    assert map_token_rewards([(0, 3), (3, 13)], [1.0, 4.0], [(0, 3), (3, 6)]) == [1.0, 4.0]
    assert map_token_rewards([(0, 3)], [1.0], []) == []


def test_map_token_rewards_preserves_sum():
    g = torch.Generator().manual_seed(0)
    cuts_a = sorted(set(torch.randint(1, 50, (12,), generator=g).tolist())) + [50]
    cuts_b = sorted(set(torch.randint(1, 50, (7,), generator=g).tolist())) + [50]
    spans = lambda cuts: list(zip([0] + cuts[:-1], cuts))  # noqa: E731
    src, dst = spans(cuts_a), spans(cuts_b)
    rewards = torch.randn(len(src), generator=g).tolist()
    out = map_token_rewards(src, rewards, dst)
    assert sum(out) == pytest.approx(sum(rewards))
    # identity when the tokenizations agree
    assert map_token_rewards(src, rewards, src) == pytest.approx(rewards)


def test_decode_offsets_cover_text(tiny):
    _, tok = tiny
    ids = tok("Paris is the capital of France. ü!", add_special_tokens=False)["input_ids"]
    text, offsets = decode_offsets(ids, lambda x: tok.decode(x, skip_special_tokens=True))
    assert len(offsets) == len(ids)
    assert "".join(text[s:e] for s, e in offsets) == text
    assert all(s <= e for s, e in offsets) and offsets[-1][1] == len(text)


# The issue's group: four answers to one arithmetic prompt whose answer is not 99, all scoring -1, as
# tokens ("<s>" is the stop token): "Anna| has|<s>" (3), "Anna| has| 99|<s>" (4), "Anna| has| 99| now|.|<s>" (6),
# "Anna| has| 99|.| So| 99|.|<s>" (8).
_LENS = (3, 4, 6, 8)


def _group_mask():
    return torch.tensor([[1.0] * n + [0.0] * (8 - n) for n in _LENS])


def test_old_placement_credits_stopping_and_causal_placement_does_not():
    from finealign.core.ppo import group_advantages, token_group_advantages

    m = _group_mask()
    # the old placement: each answer's -1 on its last *text* token (the missing number on "has", the wrong
    # answer on the last "99"), the stop token 0
    old = torch.zeros(4, 8)
    for i, pos in enumerate((1, 2, 2, 5)):
        old[i, pos] = -1.0
    a = group_advantages(old, m, 4).advantages
    # every G_0 = -1, so the baseline is -1; the stop token's reward-to-go is 0: A = 0 - (-1) = +1 in each row
    assert [a[i, n - 1].item() for i, n in enumerate(_LENS)] == [1.0, 1.0, 1.0, 1.0]
    # causal placement: the -1 on the stop token of every answer; both estimators give every token A = 0
    causal = torch.zeros(4, 8)
    for i, n in enumerate(_LENS):
        causal[i, n - 1] = -1.0
    for est in (group_advantages(causal, m, 4), token_group_advantages(causal, m, 4)):
        assert torch.equal(est.advantages, torch.zeros(4, 8))


def test_token_group_advantages_by_hand():
    from finealign.core.ppo import token_group_advantages

    # k = 2: row0 valid 3 tokens, rewards [0.5, 0, 1] (outcome 1 on its stop token, dense [0.5, 0]: 0.25 per
    # token); row1 valid 2, rewards [-0.2, 0] (outcome 0, dense [-0.2]: -0.2 per token)
    r = torch.tensor([[0.5, 0.0, 1.0], [-0.2, 0.0, 9.0]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0]])
    a = token_group_advantages(r, m, 2)
    # row0: dense - b0 (= -0.2) = [0.7, 0.2], outcome 1 - 0 = 1 -> A0 = [0.7 + 0.2 + 1, 0.2 + 1, 1] = [1.9, 1.2, 1]
    # row1: dense - b1 (= 0.25) = [-0.45], outcome 0 - 1 = -1 -> A1 = [-1.45, -1, 0 (masked)]
    assert a.advantages.flatten().tolist() == pytest.approx([1.9, 1.2, 1.0, -1.45, -1.0, 0.0])
    assert a.returns.flatten().tolist() == pytest.approx([1.5, 1.0, 1.0, -0.2, 0.0, 0.0])


def test_token_group_advantages_issue_group_with_dense_rewards():
    from finealign.core.ppo import token_group_advantages

    m = _group_mask()
    r = torch.zeros(4, 8)
    for i, n in enumerate(_LENS):
        r[i, n - 1] = -1.0  # every outcome -1: outcome advantages 0
    r[0, 0] = r[0, 1] = -0.1  # row0 dense [-0.1, -0.1]: -0.1 per token
    r[1, 2] = -0.3  # row1 dense [0, 0, -0.3]: -0.1 per token; rows 2 and 3: 0 per token
    a = token_group_advantages(r, m, 4).advantages
    # b0 = b1 = mean(-0.1, 0, 0) = -1/30; b2 = b3 = mean(-0.1, -0.1, 0) = -1/15
    # row0: [-0.1 + 1/30] * 2 = [-1/15, -1/15], stop 0 -> A0 = [-2/15, -1/15, 0]
    assert a[0, :3].tolist() == pytest.approx([-2 / 15, -1 / 15, 0.0])
    # row1: [1/30, 1/30, -0.3 + 1/30], stop 0 -> sums from the end: A1 = [-0.2, -0.2 - 1/30, -0.3 + 1/30, 0]
    assert a[1, :4].tolist() == pytest.approx([-0.2, -0.2 - 1 / 30, -0.3 + 1 / 30, 0.0])
    # row2: dense 0 - (-1/15) = 1/15 on 5 tokens -> A2 = [5/15, 4/15, 3/15, 2/15, 1/15, 0]
    assert a[2, :6].tolist() == pytest.approx([5 / 15, 4 / 15, 3 / 15, 2 / 15, 1 / 15, 0.0])
    assert a[3, 7].item() == pytest.approx(0.0) and a[3, 0].item() == pytest.approx(7 / 15)
    with pytest.raises(ValueError, match="k >= 2"):
        token_group_advantages(r, m, 3)


def test_token_group_advantages_equal_rloo_for_sequence_rewards():
    from finealign.core.ppo import group_advantages, place_at_last, token_group_advantages

    g = torch.Generator().manual_seed(0)
    m = (torch.arange(6).expand(4, 6) < torch.tensor([[2], [6], [4], [1]])).float()
    seq = place_at_last(torch.randn(4, generator=g), m)  # everything on the stop token
    assert torch.allclose(token_group_advantages(seq, m, 2).advantages, group_advantages(seq, m, 2).advantages)


def test_reinforce_pp_by_hand():
    from finealign.core.ppo import reinforce_pp_advantages

    r = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 1, 0]])
    a = reinforce_pp_advantages(r, m)
    # G = [3, 2, 2] and [1, 1]: mean 9/5 = 1.8; unbiased var = sum((G - 1.8)^2) / 4
    #   = (1.44 + 0.04 + 0.04 + 0.64 + 0.64) / 4 = 0.7; A = (G - 1.8) / sqrt(0.7)
    s = 0.7 ** 0.5
    assert a.advantages.flatten().tolist() == pytest.approx([1.2 / s, 0.2 / s, 0.2 / s, -0.8 / s, -0.8 / s, 0.0], abs=1e-6)


def test_value_loss_without_clip_by_hand():
    from finealign.core.ppo import value_loss

    v, old, g, m = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.ones(1, 2)
    # no clip: 0.5 * mean((2 - 0)^2, (0 - 1)^2) = 0.5 * 2.5 = 1.25; clip 0.2 takes max with the clipped
    # error (0.2 - 0)^2 = 0.04 < 4, so the same 1.25 here; clip None must equal the unclipped formula
    assert value_loss(v, old, g, m, clip=None).loss.item() == pytest.approx(1.25)
    assert value_loss(v, old, g, m, clip=0).loss.item() == pytest.approx(1.25)
