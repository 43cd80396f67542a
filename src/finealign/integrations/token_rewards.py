"""A finealign scorer's rewards on an RL engine's response tokens (the engine-independent part).

The contract (docs/token-rewards.md): a token reward is causal; what is judged on the whole
response sits on the stop token (end of turn / EOS), or on the last kept token of a response cut by
the length limit. A ``TokenScorer`` gives rewards on character spans of the response text with the
terminal reward on the zero-width unit ``(len, len)``; ``core.token_map.map_token_rewards`` moves
them onto the engine's tokens by character offsets (the engine's stop token decodes to a zero-width
span at ``len``, so the terminal unit lands on it). A plain ``Scorer``'s score, and every response's
total at ``granularity="sequence"``, goes on the last valid token. KL is never subtracted here: the
engines do it.

Notation: B responses, T the engine's response width (right-padded), n_i the valid tokens of
response i (its stop token included when it stopped).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch

from ..core.token_map import decode_offsets, map_token_rewards
from ..data.records import Prompt
from ..errors import FinealignError
from ..rewards.base import Scorer, TokenScorer, TokenScores

GRANULARITIES = ("token", "sequence")

# verl 0.9 advantage estimators (verl/trainer/ppo/core_algos.py), by what they do with positions.
KEEPS_POSITIONS = ("gae", "reinforce_plus_plus", "remax", "optimal_token_baseline", "tir_optimal_token_baseline")
SUMS_POSITIONS = ("grpo", "grpo_vectorized", "grpo_passk", "gdpo", "rloo", "rloo_vectorized", "opo", "gpg",
                  "reinforce_plus_plus_baseline")


def estimator_warning(estimator: str | None, granularity: str = "token") -> str | None:
    """The warning for token rewards under an advantage estimator that discards positions, or None.

    ``estimator``: verl's ``algorithm.adv_estimator``. Sequence-level rewards lose nothing anywhere.
    """
    if granularity != "token" or estimator is None:
        return None
    name = str(getattr(estimator, "value", estimator))
    if name in KEEPS_POSITIONS:
        return None
    if name in SUMS_POSITIONS:
        return (f"advantage estimator {name!r} sums each response's token rewards before use: finealign's per-token "
                f"rewards act as one sequence reward there. Use one that keeps positions ({', '.join(KEEPS_POSITIONS)}; "
                "gae with a critic is the fine-grained PPO of the paper), or set granularity=sequence to say so")
    return (f"advantage estimator {name!r} is not one finealign knows; check that it uses token_level_rewards per "
            f"position (those that do: {', '.join(KEEPS_POSITIONS)})")


class EngineRewards(NamedTuple):
    """Rewards of B responses on the engine's tokens."""

    rows: list[list[float]]  # rows[i]: n_i rewards, one per valid response token; sum(rows[i]) == totals[i]
    totals: list[float]  # each response's sequence score (a token scorer's: the sum of its token rewards)
    stopped: list[bool]  # the response ends with a stop token; False: cut by the length limit

    @property
    def truncated(self) -> int:
        """Responses without a stop token (cut by the engine's length limit): terminal reward on the last kept token."""
        return sum(not s for s in self.stopped)


def short(text, n: int = 60) -> str:
    s = str(text).replace("\n", " ")
    return repr(s if len(s) <= n else s[: n - 3] + "...")


def _call(scorer: Scorer, tokens: bool, prompts: list, texts: list[str]):
    return scorer.score_tokens(prompts, texts) if tokens else scorer.score(prompts, texts)


def score_records(scorer: Scorer, prompts: Sequence[Prompt], texts: Sequence[str], labels: Sequence[str],
                  *, tokens: bool) -> list:
    """``scorer.score_tokens`` (``tokens``) or ``scorer.score`` over all records, with every failure named.

    When the batch call raises, each record is scored alone to find the one(s) that fail; the
    ``FinealignError`` names the first failing record by ``labels[i]`` (and says how many failed).
    A wrong number of results or a non-finite reward is an error naming the record too. Nothing is
    zeroed silently.
    """
    name = getattr(scorer, "name", type(scorer).__name__)
    prompts, texts = list(prompts), list(texts)
    try:
        out = _call(scorer, tokens, prompts, texts)
    except Exception as e:  # noqa: BLE001 - re-raised below with the record that caused it
        bad = []
        for i in range(len(texts)) if len(texts) > 1 else ():
            try:
                _call(scorer, tokens, prompts[i: i + 1], texts[i: i + 1])
            except Exception as e1:  # noqa: BLE001
                bad.append((i, e1))
        if len(texts) == 1:
            bad = [(0, e)]
        if not bad:
            raise FinealignError(f"reward scorer {name!r} failed on a batch of {len(texts)} records but on none "
                                 f"alone: {type(e).__name__}: {e}") from e
        i, err = bad[0]
        more = f" ({len(bad)} of {len(texts)} records fail)" if len(texts) > 1 else ""
        raise FinealignError(f"reward scorer {name!r} failed on {labels[i]}{more}: {type(err).__name__}: {err} "
                             f"[prompt {short(prompts[i])}, response {short(texts[i])}]") from err
    if len(out) != len(texts):
        raise FinealignError(f"reward scorer {name!r} returned {len(out)} results for {len(texts)} records")
    for i, o in enumerate(out):
        vals = o.rewards if tokens else [o]
        if tokens and len(o.offsets) != len(o.rewards):
            raise FinealignError(f"reward scorer {name!r} on {labels[i]}: {len(o.offsets)} offsets but "
                                 f"{len(o.rewards)} rewards")
        if not all(math.isfinite(float(v)) for v in vals):
            raise FinealignError(f"reward scorer {name!r} gave a non-finite reward on {labels[i]} "
                                 f"[response {short(texts[i])}]")
    return out


def place(per: TokenScores | None, total: float, dst_offsets: Sequence[tuple[int, int]]) -> list[float]:
    """One response's rewards on its ``len(dst_offsets)`` engine tokens.

    ``per``: the token scorer's rewards (mapped by character offsets, sum preserved), or None: ``total``
    on the last token. No tokens: an empty list (nothing can carry the reward).
    """
    n = len(dst_offsets)
    if n == 0:
        return []
    if per is None:
        return [0.0] * (n - 1) + [float(total)]
    return map_token_rewards(per.offsets, per.rewards, dst_offsets)


def engine_rewards(scorer: Scorer, prompts: Sequence[Prompt], response_ids: Sequence[Sequence[int]], tokenizer,
                   *, stop_ids: Sequence[int] = (), granularity: str = "token", labels: Sequence[str] | None = None,
                   decode: Callable[[list[int]], str] | None = None) -> EngineRewards:
    """Score B responses given as the engine's token ids and place the rewards on those ids.

    ``response_ids[i]``: the n_i valid response tokens, the stop token included when the response
    stopped; ``tokenizer``: the policy's (its ``decode`` with special tokens skipped gives the text the
    scorer sees, and each token's character span through ``core.token_map.decode_offsets``: a stop
    token decodes to the zero-width span at the end). ``stop_ids``: the ids that end a response; a
    response whose last token is none of them was cut by the length limit (``EngineRewards.stopped``).
    ``granularity``: ``token`` maps a token scorer's rewards; ``sequence`` puts its total (the sum) on
    the last valid token. ``labels[i]`` names record i in errors (default ``record i``).
    """
    if granularity not in GRANULARITIES:
        raise FinealignError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if len(prompts) != len(response_ids):
        raise FinealignError(f"{len(prompts)} prompts for {len(response_ids)} responses")
    labels = list(labels) if labels is not None else [f"record {i}" for i in range(len(response_ids))]
    decode = decode or (lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    ids = [[int(t) for t in r] for r in response_ids]
    texts = [decode(r) for r in ids]
    tokens = isinstance(scorer, TokenScorer)
    out = score_records(scorer, prompts, texts, labels, tokens=tokens)
    stops = {int(s) for s in stop_ids}
    rows, totals, stopped = [], [], []
    for i, r in enumerate(ids):
        per = out[i] if tokens else None
        total = float(sum(per.rewards)) if per is not None else float(out[i])
        if per is not None and granularity == "token":
            dst = decode_offsets(r, decode)[1]
        else:
            per, dst = None, [(0, 0)] * len(r)  # only the count matters: the total goes on the last token
        rows.append(place(per, total, dst))
        totals.append(total)
        stopped.append(bool(r) and r[-1] in stops)
    return EngineRewards(rows, totals, stopped)


def to_tensor(rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    """Rows of per-token rewards as a zero-padded float32 ``(B, width)`` tensor, each row from position 0.

    A row longer than ``width`` is an error (the engine's response is never wider than its tensor).
    """
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        if len(r) > width:
            raise FinealignError(f"record {i}: {len(r)} token rewards for a response width of {width}")
        if len(r):
            out[i, : len(r)] = torch.tensor([float(x) for x in r], dtype=torch.float32)
    return out
