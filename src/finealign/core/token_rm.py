"""Losses of the token-level reward model (DESIGN.md, "Token-level reward model"). Pure functions.

Notation: B pairs, T token positions (padded). ``r_w`` / ``r_l`` are the per-token rewards
``r_t = head(h_t)`` of the edited (preferred, y_w) and original (less-preferred, y_l) sequences,
both (B, T) (the two sides may be padded to different T). Masks are (B, T) bool or 0/1 tensors.
Values at masked-out positions never matter (they are replaced by 0 before summing, so even a
NaN there is harmless); a side whose mask is empty sums to 0.

* ``span_bt_pure`` (``span_bt_loss``, the paper's loss): unchanged tokens are assumed to carry
  equal reward in both responses and cancel, so only the changed tokens enter:
  ``L = -log sigmoid(sum_{t in E_w} r_t(y_w) - sum_{t in E_l} r_t(y_l))``. Alone it leaves the
  unchanged tokens free: a pure deletion is satisfied by lowering every token's reward, so summed
  scores come to prefer short answers.
* ``span_bt`` (default, ``anchored_span_bt_loss``): the span loss plus ``anchor_weight`` times the
  mean squared reward of the unchanged response tokens of both sides, which pulls them toward 0, so
  an edit moves only the tokens it changed.
* ``seq_bt_loss``: the same Bradley-Terry loss over all response tokens (a sequence reward model
  with sum pooling), the baseline.
* ``token_cls_loss``: per-token binary cross-entropy with ``r_t`` as the logit; the original's
  changed tokens are bad (target 0), its unchanged tokens good (target 1: the contrast token AUROC
  measures), the edited side's changed tokens good (target 1) (``token_cls_targets``).

Response masks include the stop token (end of turn); an edit that inserts at the end of a response
marks the original's stop token as changed (``core.align.inserts_at_end``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["BTStats", "LOSSES", "anchored_span_bt_loss", "masked_sum", "bt_loss_from_sums", "span_bt_loss",
           "seq_bt_loss", "token_cls_loss", "token_cls_targets", "REWARD_KINDS", "token_rewards_from_head", "reward_kind_of_loss",
           "natural_threshold"]

LOSSES = ("span_bt", "span_bt_pure", "seq_bt", "token_cls")
# what a token RM's head output is as a reward: a Bradley-Terry loss trains the reward itself ("logit"); a
# token classifier trains the logit of P(token is fine), whose reward is log P(fine) ("log_sigmoid")
REWARD_KINDS = ("logit", "log_sigmoid")


def reward_kind_of_loss(loss: str) -> str:
    """The ``REWARD_KINDS`` entry of a model trained with ``loss`` (one of ``LOSSES``)."""
    return "log_sigmoid" if loss == "token_cls" else "logit"


def token_rewards_from_head(head: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token rewards (B, T) from a token RM's head outputs ``head`` (B, T).

    ``kind="logit"``: the head output is the reward (span/sequence Bradley-Terry, Rafailov et al. 2024's
    token-level rewards). ``kind="log_sigmoid"``: the head output is the logit of P(token is fine) of a
    token classifier (``token_cls_loss``), and the reward is ``log sigmoid(r_t) = log P(fine) <= 0`` (in
    nats): a token the classifier is sure of costs ~0 and a wrong one costs much, so the sum over a
    response is log P(no token wrong) under independence (cf. FineGrainedRLHF, Wu et al. 2023, whose
    error-span RMs penalise the flagged spans) instead of the raw logits' sum, which grows with every
    confidently fine token and so pays for length. Pointwise, so it keeps a causal reward causal.
    Raises ``ValueError`` for another kind.
    """
    if kind == "logit":
        return head
    if kind == "log_sigmoid":
        return F.logsigmoid(head)
    raise ValueError(f"token reward kind must be one of {', '.join(REWARD_KINDS)}, got {kind!r}")


def natural_threshold(kind: str) -> float:
    """The reward below which a token is flagged as wrong: 0 for a logit reward, log 0.5 (P(fine) < 1/2) for
    ``log_sigmoid``. Raises ``ValueError`` for another kind."""
    if kind not in REWARD_KINDS:
        raise ValueError(f"token reward kind must be one of {', '.join(REWARD_KINDS)}, got {kind!r}")
    return 0.0 if kind == "logit" else math.log(0.5)


class BTStats(NamedTuple):
    """A Bradley-Terry loss with its statistics: ``loss`` scalar; ``margins`` (B,) = s_w - s_l."""

    loss: torch.Tensor
    margins: torch.Tensor


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` (B, T) over positions where ``mask`` (B, T) is true: (B,).

    Masked-out positions contribute exactly 0 whatever they hold (NaN and inf included).
    """
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} differ in shape")
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(-1)


def bt_loss_from_sums(s_w: torch.Tensor, s_l: torch.Tensor) -> BTStats:
    """Bradley-Terry loss ``mean_b -log sigmoid(s_w[b] - s_l[b])`` of summed rewards s_w, s_l (B,)."""
    margins = s_w - s_l
    return BTStats(-F.logsigmoid(margins).mean(), margins.detach())


def span_bt_loss(r_w: torch.Tensor, changed_w: torch.Tensor, r_l: torch.Tensor, changed_l: torch.Tensor) -> BTStats:
    """Span Bradley-Terry loss over the changed tokens only.

    ``r_w`` (B, T_w) rewards of the edited sequences, ``changed_w`` (B, T_w) its E_w tokens
    (replaced or inserted); ``r_l`` (B, T_l), ``changed_l`` (B, T_l) the original's E_l tokens
    (replaced or deleted). ``L = mean_b -log sigmoid(sum_{E_w} r - sum_{E_l} r)``; an empty E
    side sums to 0 (a pure insertion compares sum_{E_w} r with 0).
    """
    return bt_loss_from_sums(masked_sum(r_w, changed_w), masked_sum(r_l, changed_l))


def anchored_span_bt_loss(r_w: torch.Tensor, changed_w: torch.Tensor, response_w: torch.Tensor, r_l: torch.Tensor,
                          changed_l: torch.Tensor, response_l: torch.Tensor, anchor_weight: float = 0.1) -> BTStats:
    """``span_bt_loss`` plus an anchor on the unchanged tokens.

    r_w, changed_w, response_w: (B, T_w); r_l, changed_l, response_l: (B, T_l).
    ``L = span_bt + anchor_weight * mean_b (sum_{U_b} r_t^2 / max(1, |U_b|))`` with U_b the unchanged
    response tokens of both sides of pair b (``response & ~changed``). ``margins`` are the span margins.
    """
    bt = span_bt_loss(r_w, changed_w, r_l, changed_l)
    u_w, u_l = response_w.bool() & ~changed_w.bool(), response_l.bool() & ~changed_l.bool()
    sq = masked_sum(r_w ** 2, u_w) + masked_sum(r_l ** 2, u_l)  # (B,): per pair, so that data-parallel
    n = (u_w.sum(-1) + u_l.sum(-1)).clamp(min=1)  # processes' means average to the whole batch's
    return BTStats(bt.loss + anchor_weight * (sq / n).mean(), bt.margins)


def seq_bt_loss(r_w: torch.Tensor, response_w: torch.Tensor, r_l: torch.Tensor, response_l: torch.Tensor) -> BTStats:
    """Sequence Bradley-Terry loss with sum pooling over all response tokens.

    ``response_w`` (B, T_w) / ``response_l`` (B, T_l) mark the response tokens of each side
    (prompt, template and padding excluded). ``L = mean_b -log sigmoid(sum_w r - sum_l r)``.
    """
    return bt_loss_from_sums(masked_sum(r_w, response_w), masked_sum(r_l, response_l))


def token_cls_targets(changed_w: torch.Tensor, changed_l: torch.Tensor, response_l: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets and masks for ``token_cls_loss``: changed_w (B, T_w); changed_l, response_l (B, T_l).

    Returns ``(targets_w, mask_w, targets_l, mask_l)``: on the edited side, E_w is labelled 1 (its
    unchanged tokens repeat the original's and are not labelled twice); on the original, every
    response token is labelled: 0 on E_l, 1 on the unchanged ones (FineGrainedRLHF labels the
    unchanged content as a class too), so the classifier contrasts a wrong token with its context.
    """
    resp_l = response_l.bool()
    targets_l = (resp_l & ~changed_l.bool()).float()
    return changed_w.float(), changed_w.bool(), targets_l, resp_l


def token_cls_loss(rewards: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token binary cross-entropy with the reward as the logit, averaged over masked tokens.

    ``rewards`` (B, T) logits r_t; ``targets`` (B, T) in {0, 1} (1 = good, 0 = bad; see
    ``token_cls_targets``); ``mask`` (B, T) the tokens that carry a label. Returns a scalar:
    ``sum_{mask} BCE(r_t, target_t) / max(1, |mask|)``, so an empty mask gives 0.
    """
    if not (rewards.shape == targets.shape == mask.shape):
        raise ValueError(f"rewards {tuple(rewards.shape)}, targets {tuple(targets.shape)} and mask "
                         f"{tuple(mask.shape)} differ in shape")
    m = mask.bool()
    safe_r = torch.where(m, rewards, torch.zeros((), dtype=rewards.dtype, device=rewards.device))
    safe_t = torch.where(m, targets.to(rewards.dtype), torch.zeros((), dtype=rewards.dtype, device=rewards.device))
    per_tok = F.binary_cross_entropy_with_logits(safe_r, safe_t, reduction="none")
    per_tok = torch.where(m, per_tok, torch.zeros((), dtype=per_tok.dtype, device=per_tok.device))
    return per_tok.sum() / m.sum().clamp(min=1)
