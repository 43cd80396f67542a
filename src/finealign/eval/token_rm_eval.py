"""Evaluation of a token-level reward model on held-out minimal-edit pairs.

* ``pairwise_acc``: edited > original by the summed reward of the response tokens (ties 1/2);
  ``pairwise_acc_mean``: the same with mean pooling; ``length_acc``: the "longer response wins"
  baseline (response tokens) that every reward must beat (DESIGN.md).
* token level, on the original (less-preferred) responses: ``token_auroc`` = AUROC of *low*
  rewards for the changed tokens E_l (0.5 = chance); ``r_precision``; ``precision``/``recall``/
  ``f1`` of flagging ``reward < threshold`` (default: ``core.token_rm.natural_threshold`` of the model's
  reward kind: 0 for a Bradley-Terry RM, log 0.5 for a token classifier) as changed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from ..core.metrics import pairwise_accuracy, token_metrics
from ..models.token_rm_data import PairExample, collate_pairs


@dataclass(frozen=True)
class TokenRMEval:
    n_pairs: int
    pairwise_acc: float
    pairwise_acc_mean: float
    length_acc: float
    token_auroc: float
    r_precision: float
    precision: float
    recall: float
    f1: float
    threshold: float
    n_tokens: int
    n_changed: int
    mean_margin: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


@torch.no_grad()
def pair_token_rewards(model, pairs: Sequence[PairExample], pad_id: int, batch_size: int = 8,
                       on_batch=None) -> list[tuple[list[float], list[float]]]:
    """Per response-token rewards ``(edited_rewards, original_rewards)`` of each pair."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out: list[tuple[list[float], list[float]]] = []
    try:
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            b = collate_pairs(chunk, pad_id)
            r = model.token_rewards(b.input_ids.to(dev), b.attention_mask.to(dev)).float().cpu()
            n = b.n_pairs
            for k in range(n):
                out.append((r[k][b.response[k]].tolist(), r[n + k][b.response[n + k]].tolist()))
            if on_batch is not None:
                on_batch(len(chunk))
    finally:
        model.train(was_training)
    return out


def evaluate_token_rm(model, pairs: Sequence[PairExample], pad_id: int, *, batch_size: int = 8,
                      threshold: float | None = None, on_batch=None) -> TokenRMEval:
    """All metrics of ``model`` on ``pairs`` (see the module docstring)."""
    if threshold is None:
        from ..core.token_rm import natural_threshold

        threshold = natural_threshold(getattr(getattr(model, "spec", None), "reward", "logit"))
    rw = pair_token_rewards(model, pairs, pad_id, batch_size, on_batch)
    sum_w = [sum(w) for w, _ in rw]
    sum_l = [sum(l) for _, l in rw]
    mean_w = [sum(w) / max(1, len(w)) for w, _ in rw]
    mean_l = [sum(l) / max(1, len(l)) for _, l in rw]
    len_w = [float(len(w)) for w, _ in rw]
    len_l = [float(len(l)) for _, l in rw]
    labels = [[c for c, m in zip(p.original.changed, p.original.response_mask) if m] for p in pairs]
    tm = token_metrics([l for _, l in rw], labels, threshold)
    margins = [a - b for a, b in zip(sum_w, sum_l)]
    return TokenRMEval(
        n_pairs=len(pairs), pairwise_acc=pairwise_accuracy(sum_w, sum_l), pairwise_acc_mean=pairwise_accuracy(mean_w, mean_l),
        length_acc=pairwise_accuracy(len_w, len_l), token_auroc=tm.auroc, r_precision=tm.r_precision,
        precision=tm.precision, recall=tm.recall, f1=tm.f1, threshold=tm.threshold, n_tokens=tm.n_tokens,
        n_changed=tm.n_changed, mean_margin=sum(margins) / len(margins) if margins else math.nan,
    )
