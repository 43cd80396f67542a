"""Token RM losses (core.token_rm): hand-worked numbers and invariants."""

import math

import pytest
import torch

from finealign.core.token_rm import (masked_sum, seq_bt_loss, span_bt_loss, token_cls_loss, token_cls_targets)

T = torch.tensor


def test_span_bt_hand_worked():
    # edited: changed tokens 2 and 3 -> 2.0 + 3.0 = 5.0; original: changed token 1 -> 0.5
    # margin 4.5; loss = -log sigmoid(4.5) = log(1 + e^-4.5) = log(1.011109) = 0.0110478
    out = span_bt_loss(T([[1.0, 2.0, 3.0]]), T([[0, 1, 1]]), T([[0.5, 4.0]]), T([[1, 0]]))
    assert out.loss.item() == pytest.approx(0.0110478, abs=1e-6)
    assert out.margins.tolist() == pytest.approx([4.5])


def test_span_bt_empty_side_sums_to_zero():
    # pure insertion: E_l empty -> s_l = 0; s_w = 2.0; loss = log(1 + e^-2) = log(1.135335) = 0.126928
    out = span_bt_loss(T([[2.0, 7.0]]), T([[1, 0]]), T([[9.0, 9.0]]), T([[0, 0]]))
    assert out.loss.item() == pytest.approx(0.126928, abs=1e-6)
    # both sides empty: margin 0, loss = log 2 = 0.693147
    both = span_bt_loss(T([[2.0]]), T([[0]]), T([[9.0]]), T([[0]]))
    assert both.loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_seq_bt_hand_worked():
    # response tokens: edited 1.0 + 2.0 = 3.0 (the 3.0 is padding); original 0.5 + 4.0 = 4.5
    # margin -1.5; loss = log(1 + e^1.5) = log(5.481689) = 1.701413
    out = seq_bt_loss(T([[1.0, 2.0, 3.0]]), T([[1, 1, 0]]), T([[0.5, 4.0]]), T([[1, 1]]))
    assert out.loss.item() == pytest.approx(1.701413, abs=1e-6)


def test_token_cls_hand_worked():
    # token 0: logit 0, target 1 -> log 2 = 0.693147; token 1: logit 2, target 0 -> log(1 + e^2) = 2.126928
    # token 2 masked out. mean over 2 tokens = (0.693147 + 2.126928) / 2 = 1.410038
    loss = token_cls_loss(T([[0.0, 2.0, -1.0]]), T([[1.0, 0.0, 0.0]]), T([[1, 1, 0]]))
    assert loss.item() == pytest.approx(1.410038, abs=1e-6)


def test_token_cls_empty_mask_is_zero():
    assert token_cls_loss(T([[1.0, 2.0]]), T([[1.0, 0.0]]), T([[0, 0]])).item() == 0.0


def test_token_cls_targets():
    # original: 4 response tokens (the 5th is padding), tokens 0 and 1 changed -> targets [0, 0, 1, 1], all
    # four labelled: the unchanged tokens are the good class the changed ones are contrasted with
    tw, mw, tl, ml = token_cls_targets(T([[0, 1]]), T([[1, 1, 0, 0, 0]]), T([[1, 1, 1, 1, 0]]))
    assert tw.tolist() == [[0.0, 1.0]] and mw.tolist() == [[False, True]]
    assert tl.tolist() == [[0.0, 0.0, 1.0, 1.0, 0.0]] and ml.tolist() == [[True, True, True, True, False]]


def test_anchored_span_bt_hand_worked():
    from finealign.core.token_rm import anchored_span_bt_loss

    # span part as in test_span_bt_hand_worked: margin 4.5, 0.0110478. Unchanged response tokens: edited
    # token 0 (1.0; token 2 is changed) and original token 1 (4.0; token 2 is padding), so the anchor is
    # (1.0^2 + 4.0^2) / 2 = 8.5; with weight 0.1: 0.0110478 + 0.85 = 0.8610478
    out = anchored_span_bt_loss(T([[1.0, 2.0, 3.0]]), T([[0, 1, 1]]), T([[1, 1, 1]]),
                                T([[0.5, 4.0, 7.0]]), T([[1, 0, 0]]), T([[1, 1, 0]]), anchor_weight=0.1)
    assert out.loss.item() == pytest.approx(0.8610478, abs=1e-6)
    assert out.margins.tolist() == pytest.approx([4.5])
    # weight 0 is the paper's pure span loss
    pure = anchored_span_bt_loss(T([[1.0, 2.0, 3.0]]), T([[0, 1, 1]]), T([[1, 1, 1]]),
                                 T([[0.5, 4.0, 7.0]]), T([[1, 0, 0]]), T([[1, 1, 0]]), anchor_weight=0.0)
    assert pure.loss.item() == pytest.approx(0.0110478, abs=1e-6)


def test_anchor_stops_a_deletion_from_lowering_every_token():
    """A pure deletion: the span loss alone is lowered as much by pushing every token down as by pushing the
    deleted one down; with the anchor, gradient descent moves the deleted token and leaves the others near 0."""
    from finealign.core.token_rm import anchored_span_bt_loss

    # a head r_t = x_t . w + b over token features: the bias b is shared by every token, as in a real head
    x_l = T([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 0, 0]]])  # the original; token 2 deleted
    x_w = T([[[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]]])  # the edit: nothing changed on its side

    def fit(weight):
        w, b = torch.zeros(3, requires_grad=True), torch.zeros((), requires_grad=True)
        opt = torch.optim.SGD([w, b], lr=0.5)
        for _ in range(200):
            opt.zero_grad()
            anchored_span_bt_loss(x_w @ w + b, T([[0, 0, 0]]), T([[1, 1, 1]]),
                                  x_l @ w + b, T([[0, 0, 1, 0]]), T([[1, 1, 1, 1]]), weight).loss.backward()
            opt.step()
        return (x_l @ w + b).detach()[0]

    pure = fit(0.0)
    assert pure[[0, 1, 3]].max() < -1.0  # the paper's loss: the shared bias lowers every token
    anchored = fit(0.1)
    assert anchored[2] < -1.0 and anchored[[0, 1, 3]].abs().max() < 0.1  # the anchor: only the deleted token



@pytest.mark.parametrize("fn", ["span", "seq"])
def test_masked_positions_do_not_matter(fn):
    g = torch.Generator().manual_seed(0)
    r_w, r_l = torch.randn(3, 5, generator=g), torch.randn(3, 4, generator=g)
    m_w, m_l = torch.rand(3, 5, generator=g) > 0.5, torch.rand(3, 4, generator=g) > 0.5
    f = span_bt_loss if fn == "span" else seq_bt_loss
    base = f(r_w, m_w, r_l, m_l).loss
    junk_w = torch.where(m_w, r_w, torch.full_like(r_w, float("nan")))
    junk_l = torch.where(m_l, r_l, torch.full_like(r_l, 1e6))
    assert f(junk_w, m_w, junk_l, m_l).loss.item() == pytest.approx(base.item(), abs=1e-6)
    tgt = (torch.rand(3, 5, generator=g) > 0.5).float()
    base_cls = token_cls_loss(r_w, tgt, m_w)
    assert token_cls_loss(junk_w, torch.where(m_w, tgt, torch.full_like(tgt, 0.5)), m_w).item() == pytest.approx(base_cls.item(), abs=1e-6)


def test_masked_values_get_no_gradient():
    r = torch.randn(2, 4, requires_grad=True)
    m = T([[1, 0, 1, 0], [0, 0, 0, 1]]).bool()
    span_bt_loss(r, m, r.detach() * 0, torch.zeros_like(m)).loss.backward()
    assert (r.grad[~m] == 0).all() and (r.grad[m] != 0).all()


def test_loop_and_vectorised_agree():
    g = torch.Generator().manual_seed(1)
    B = 6
    r_w, r_l = torch.randn(B, 7, generator=g), torch.randn(B, 5, generator=g)
    m_w, m_l = torch.rand(B, 7, generator=g) > 0.4, torch.rand(B, 5, generator=g) > 0.4
    loop = 0.0
    for b in range(B):
        s_w = sum(float(r_w[b, t]) for t in range(7) if m_w[b, t])
        s_l = sum(float(r_l[b, t]) for t in range(5) if m_l[b, t])
        loop += math.log1p(math.exp(-(s_w - s_l))) / B
    assert span_bt_loss(r_w, m_w, r_l, m_l).loss.item() == pytest.approx(loop, abs=1e-5)
    # token_cls: per-token loop over masked tokens
    tgt = (torch.rand(B, 7, generator=g) > 0.5).float()
    tot, n = 0.0, 0
    for b in range(B):
        for t in range(7):
            if m_w[b, t]:
                x, y = float(r_w[b, t]), float(tgt[b, t])
                tot += math.log1p(math.exp(-x)) if y == 1 else math.log1p(math.exp(x))
                n += 1
    assert token_cls_loss(r_w, tgt, m_w).item() == pytest.approx(tot / n, abs=1e-5)


def test_batch_equals_mean_of_single_rows():
    g = torch.Generator().manual_seed(2)
    r_w, r_l = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    m_w, m_l = torch.ones(4, 3, dtype=torch.bool), torch.rand(4, 3, generator=g) > 0.5
    whole = seq_bt_loss(r_w, m_w, r_l, m_l).loss
    rows = [seq_bt_loss(r_w[i:i + 1], m_w[i:i + 1], r_l[i:i + 1], m_l[i:i + 1]).loss for i in range(4)]
    assert whole.item() == pytest.approx(sum(x.item() for x in rows) / 4, abs=1e-6)


def test_masked_sum_shape_check():
    assert masked_sum(T([[1.0, 2.0]]), T([[1, 1]])).tolist() == [3.0]
    with pytest.raises(ValueError):
        masked_sum(T([[1.0, 2.0]]), T([[1]]))


def test_token_rewards_from_head_hand_worked():
    from finealign.core.token_rm import natural_threshold, token_rewards_from_head

    head = torch.tensor([[0.0, 2.0, -2.0]])
    # log sigmoid(x) = -log(1 + e^-x): x=0 -> -log 2 = -0.6931; x=2 -> -log(1.1353) = -0.1269;
    # x=-2 -> -log(1 + 7.3891) = -2.1269
    assert token_rewards_from_head(head, "log_sigmoid")[0].tolist() == pytest.approx([-0.6931, -0.1269, -2.1269], abs=1e-4)
    assert torch.equal(token_rewards_from_head(head, "logit"), head)
    assert natural_threshold("logit") == 0.0 and natural_threshold("log_sigmoid") == pytest.approx(-0.6931, abs=1e-4)
    with pytest.raises(ValueError, match="log_sigmoid"):
        token_rewards_from_head(head, "sigmoid")


def test_log_p_fine_rewards_do_not_pay_for_length():
    from finealign.core.token_rm import token_rewards_from_head

    # a classifier sure of fine tokens (logit 4) and of one wrong token (logit -3): a short right answer
    # [4, 4] against a longer one with the wrong token [4, 4, 4, 4, 4, -3].
    short, long = torch.tensor([4.0, 4.0]), torch.tensor([4.0, 4.0, 4.0, 4.0, 4.0, -3.0])
    # raw logits summed: 8 < 17, the longer wrong answer wins (every fine token pays)
    assert token_rewards_from_head(short, "logit").sum() < token_rewards_from_head(long, "logit").sum()
    # log P(fine): log sigmoid(4) = -0.0181, log sigmoid(-3) = -3.0486: short 2 * -0.0181 = -0.0363,
    # long 5 * -0.0181 - 3.0486 = -3.1393: the short right answer wins
    assert token_rewards_from_head(short, "log_sigmoid").sum().item() == pytest.approx(-0.0363, abs=1e-3)
    assert token_rewards_from_head(long, "log_sigmoid").sum().item() == pytest.approx(-3.1393, abs=1e-3)
