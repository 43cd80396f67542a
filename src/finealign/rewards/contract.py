"""The token-reward contract (docs/token-rewards.md), checked where token rewards enter training.

Every token scorer returns, per response, ``TokenScores``: units with character ``offsets`` into the
response text and one reward each. The contract:

* causal: the reward of a unit depends on the prompt and the text up to that unit only; what is
  judged on the whole response (a final answer, missing items, a sequence score) is on the *stop
  unit*, the zero-width unit ``(len, len)`` standing for the end-of-turn token (PPO maps it onto the
  policy's stop token, or onto the last kept token of a truncated response);
* units lie inside the response: ``0 <= start <= end <= len(response)``, in text order;
* the rewards are finite and, for a scorer whose ``token_sum_is_score`` is true, add up to its
  ``score`` (tolerance 1e-4 relative).

``check_token_scores`` raises ``FinealignError`` naming the scorer and the record when one is broken.
Causality cannot be checked from one output; ``causal_violations`` checks it by extending a response
(the property test of every built-in token scorer uses it).
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import FinealignError

SUM_TOLERANCE = 1e-4


def check_token_scores(scorer: str, index: int, response: str, ts, score: float | None = None) -> None:
    """Raise ``FinealignError`` when ``ts`` (a ``TokenScores`` of ``response``, record ``index``) breaks the
    contract: lengths differ, a unit lies outside the response or out of order, a reward is not finite,
    or (``score`` given) the rewards do not add up to ``score``."""
    where = f"reward scorer {scorer!r}, record {index}"
    if not (len(ts.offsets) == len(ts.rewards) == len(ts.token_ids)):
        raise FinealignError(f"{where}: {len(ts.token_ids)} token ids, {len(ts.offsets)} offsets and "
                             f"{len(ts.rewards)} rewards")
    n, prev = len(response), 0
    for k, (s, e) in enumerate(ts.offsets):
        if not (0 <= s <= e <= n):
            raise FinealignError(f"{where}: unit {k} at characters ({s}, {e}) lies outside the response "
                                 f"(length {n}); a reward past the end belongs on the stop unit ({n}, {n})")
        if s < prev and e < prev:
            raise FinealignError(f"{where}: unit {k} at ({s}, {e}) comes before the unit ending at {prev}: units "
                                 "must be in text order")
        prev = max(prev, e)
    bad = next((k for k, r in enumerate(ts.rewards) if not math.isfinite(float(r))), None)
    if bad is not None:
        raise FinealignError(f"{where}: reward {ts.rewards[bad]} of unit {bad} is not finite")
    if score is not None:
        total = float(sum(ts.rewards))
        if abs(total - score) > SUM_TOLERANCE * max(1.0, abs(score)):
            raise FinealignError(f"{where}: token rewards add up to {total:.6g} but the scorer's score is "
                                 f"{score:.6g}; token rewards must sum to the sequence score (what is judged "
                                 "on the whole response goes on the stop unit)")


def causal_violations(scorer, prompt, response: str, cuts: Sequence[int] | None = None,
                      atol: float = 1e-5) -> list[str]:
    """Where extending a prefix of ``response`` changed the reward of one of its earlier units.

    For each cut ``k`` (default: every position right after a whitespace character), the prefix
    ``response[:k]`` and the whole response are scored; every unit of the prefix but its stop unit that
    the whole response has with the same span and the same token ids up to it (an extension may merge
    the prefix's last token into a longer one) must carry the same reward. Returns one line per
    violation (empty: causal on this response)."""
    cuts = [k for k in range(1, len(response)) if response[k - 1].isspace()] if cuts is None else cuts
    full = scorer.score_tokens([prompt], [response])[0]
    at = {tuple(o): i for i, o in enumerate(full.offsets) if o[1] > o[0]}
    out = []
    for k in cuts:
        pre = scorer.score_tokens([prompt], [response[:k]])[0]
        for i in (i for i, o in enumerate(pre.offsets) if o[1] > o[0]):
            j = at.get(tuple(pre.offsets[i]))
            if j is None or list(full.token_ids[:j + 1]) != list(pre.token_ids[:i + 1]):
                continue
            if abs(float(full.rewards[j]) - float(pre.rewards[i])) > atol:
                out.append(f"cut {k}: unit {tuple(pre.offsets[i])} {response[slice(*pre.offsets[i])]!r} has reward "
                           f"{pre.rewards[i]:.4g} in the prefix, {full.rewards[j]:.4g} in the whole response")
    return out
