"""A learned reward measured against a simulated task's gold reward (held-out sets of ``sim make``).

* ``pair_acc``: pairwise accuracy on ``heldout/pairs.jsonl`` (two policy samples of one prompt whose
  gold scores differ; the one with the higher gold score should score higher; ties count 1/2);
* ``pair_acc_length_balanced``: the same with the length shortcut taken out: the mean of the accuracy on
  the pairs whose better sample is the longer and on those whose better sample is the shorter
  (``core.metrics.length_balanced_accuracy``; a reward that only prefers short answers gets 0.5);
* ``edit_acc``: the same on the held-out oracle edits (edited > original);
* ``token_auroc``: AUROC of low token rewards for the tokens inside the gold wrong spans, over every
  token of the held-out samples that have a wrong span (``core.metrics.changed_token_auroc``);
  None for a scorer without per-token rewards.

Scorers are duck-typed: ``score(prompts, responses)`` and, for token AUROC, ``score_tokens``.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.align import spans_to_token_labels
from ..core.metrics import changed_token_auroc, length_balanced_accuracy, pairwise_accuracy
from ..core.stats import bootstrap_ci
from ..data.io import iter_objects
from .base import SimTask, user_text


def _records(path: Path, limit: int | None) -> list[dict]:
    recs = [o for _, o in iter_objects(path)] if path.exists() else []
    return recs[:limit] if limit else recs


def _acc(scorer, prompts, better, worse, batch: int) -> tuple[float | None, list[float], int, float | None]:
    """(accuracy, its bootstrap interval, pairs, length-balanced accuracy) of ``scorer`` on the pairs."""
    if not prompts:
        return None, [math.nan, math.nan], 0, None
    sb, sw = [], []
    for i in range(0, len(prompts), batch):
        sb += scorer.score(prompts[i:i + batch], better[i:i + batch])
        sw += scorer.score(prompts[i:i + batch], worse[i:i + batch])
    wins = [1.0 if b > w else 0.5 if b == w else 0.0 for b, w in zip(sb, sw)]
    balanced = length_balanced_accuracy(sb, sw, [len(x) for x in better], [len(x) for x in worse])
    return pairwise_accuracy(sb, sw), list(bootstrap_ci(wins)), len(wins), None if math.isnan(balanced) else balanced


def evaluate_reward(scorer, task: SimTask, heldout: str | Path, *, limit: int | None = None,
                    batch_size: int = 8) -> dict:
    """The metrics of the module docstring for ``scorer`` on the held-out folder ``heldout``.

    ``limit`` caps each held-out set. Returns ``{pair_acc, pair_ci, n_pairs, pair_acc_length_balanced,
    n_pairs_longer_better, edit_acc, edit_ci, n_edits, token_auroc, n_tokens, n_wrong_tokens,
    length_pair_acc}`` (accuracies None on an empty set, the balanced one also when all better samples are
    longer, or all shorter; ``length_pair_acc`` is the longer-response-wins baseline on the same sample
    pairs; lengths in characters).
    """
    d = Path(heldout)
    pairs = _records(d / "pairs.jsonl", limit)
    edits = _records(d / "edits.jsonl", limit)
    pa, pci, npairs, pbal = _acc(scorer, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs],
                                 [p["rejected"] for p in pairs], batch_size)
    ea, eci, nedits, _ = _acc(scorer, [e["prompt"] for e in edits], [e["edited"] for e in edits],
                              [e["original"] for e in edits], batch_size)
    length = (pairwise_accuracy([len(p["chosen"]) for p in pairs], [len(p["rejected"]) for p in pairs])
              if pairs else None)
    out = {"pair_acc": pa, "pair_ci": pci, "n_pairs": npairs, "pair_acc_length_balanced": pbal,
           "n_pairs_longer_better": sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs),
           "edit_acc": ea, "edit_ci": eci, "n_edits": nedits,
           "length_pair_acc": length, "token_auroc": None, "n_tokens": 0, "n_wrong_tokens": 0}
    if not hasattr(scorer, "score_tokens"):
        return out
    rated = []
    for r in _records(d / "ratings.jsonl", None):
        j = task.judge(task.parse(user_text(r["prompt"])), r["response"])
        if j.wrong_spans:
            rated.append((r, j))
    rated = rated[:limit] if limit else rated
    rewards, labels = [], []
    for i in range(0, len(rated), batch_size):
        chunk = rated[i:i + batch_size]
        got = scorer.score_tokens([r["prompt"] for r, _ in chunk], [r["response"] for r, _ in chunk])
        for (r, j), ts in zip(chunk, got):
            rewards += list(ts.rewards)
            labels += spans_to_token_labels(ts.offsets, j.wrong_spans, text=r["response"])
    if labels:
        auc = changed_token_auroc(rewards, labels)
        out.update(token_auroc=None if math.isnan(auc) else auc, n_tokens=len(labels), n_wrong_tokens=int(sum(labels)))
    return out
