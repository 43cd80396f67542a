"""A learned reward measured against a simulated task's gold reward (held-out sets of ``sim make``).

* ``pair_acc``: pairwise accuracy on ``heldout/pairs.jsonl`` (two policy samples of one prompt whose
  gold scores differ; the one with the higher gold score should score higher; ties count 1/2);
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
from ..core.metrics import changed_token_auroc, pairwise_accuracy
from ..core.stats import bootstrap_ci
from ..data.io import iter_objects
from .base import SimTask, user_text


def _records(path: Path, limit: int | None) -> list[dict]:
    recs = [o for _, o in iter_objects(path)] if path.exists() else []
    return recs[:limit] if limit else recs


def _acc(scorer, prompts, better, worse, batch: int) -> tuple[float | None, list[float], int]:
    if not prompts:
        return None, [math.nan, math.nan], 0
    sb, sw = [], []
    for i in range(0, len(prompts), batch):
        sb += scorer.score(prompts[i:i + batch], better[i:i + batch])
        sw += scorer.score(prompts[i:i + batch], worse[i:i + batch])
    wins = [1.0 if b > w else 0.5 if b == w else 0.0 for b, w in zip(sb, sw)]
    return pairwise_accuracy(sb, sw), list(bootstrap_ci(wins)), len(wins)


def evaluate_reward(scorer, task: SimTask, heldout: str | Path, *, limit: int | None = None,
                    batch_size: int = 8) -> dict:
    """The metrics of the module docstring for ``scorer`` on the held-out folder ``heldout``.

    ``limit`` caps each held-out set. Returns ``{pair_acc, pair_ci, n_pairs, edit_acc, edit_ci, n_edits,
    token_auroc, n_tokens, n_wrong_tokens, length_pair_acc}`` (accuracies None on an empty set;
    ``length_pair_acc`` is the longer-response-wins baseline on the same sample pairs).
    """
    d = Path(heldout)
    pairs = _records(d / "pairs.jsonl", limit)
    edits = _records(d / "edits.jsonl", limit)
    pa, pci, npairs = _acc(scorer, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs],
                           [p["rejected"] for p in pairs], batch_size)
    ea, eci, nedits = _acc(scorer, [e["prompt"] for e in edits], [e["edited"] for e in edits],
                           [e["original"] for e in edits], batch_size)
    length = (pairwise_accuracy([len(p["chosen"]) for p in pairs], [len(p["rejected"]) for p in pairs])
              if pairs else None)
    out = {"pair_acc": pa, "pair_ci": pci, "n_pairs": npairs, "edit_acc": ea, "edit_ci": eci, "n_edits": nedits,
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
