"""The token-level reward model as a scorer: ``load_scorer("token-rm:PATH,pool=sum|mean")``.

``score`` pools the per-token rewards of the response (``sum``, the default, matches the pairwise
accuracy reported by training; ``mean`` removes the length effect). An empty response has no tokens:
its score is 0.0 under either pool (the empty sum; the mean of nothing is taken as 0). ``score_tokens`` returns one
``TokenScores`` per response, with token offsets relative to the response text, so consumers with
another tokenizer (a PPO policy) can move the rewards onto their own tokens
(``core.token_map.map_token_rewards``).

Options: ``pool`` (sum | mean), ``batch_size`` (default 8), ``max_length`` (default 1024; longer
inputs lose their oldest tokens, the prompt's first, then the response's beginning, counted in
``stats``: docs/long-inputs.md), ``device`` (cpu | cuda | auto), ``dtype``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..data.records import Prompt
from ..errors import FinealignError
from ..data.chat import pad_right
from ..core.batching import length_batches
from ..models.token_rm import EncodedResponse, TooLong, encode_response, load_token_rm
from .base import TokenScorer, TokenScores, register_scorer
from .options import TokenRMOptions

POOLS = ("sum", "mean")


class TokenRMScorer(TokenScorer):
    """Per-token rewards of a trained token RM (its head ``head(h_t)`` made a reward by the model's kind,
    ``core.token_rm.token_rewards_from_head``: the head itself for Bradley-Terry RMs, log P(fine) for a token
    classifier); score = sum or mean over the response."""

    name = "token-rm"

    def __init__(self, path: str, *, pool: str = "sum", batch_size: int = 8, max_length: int = 1024,
                 device: str = "auto", dtype: str = "float32", model=None, tokenizer=None):
        if pool not in POOLS:
            raise FinealignError(f"token-rm scorer: pool must be one of {', '.join(POOLS)}, got {pool!r}")
        if batch_size <= 0 or max_length <= 0:
            raise FinealignError("token-rm scorer: batch_size and max_length must be positive")
        self.path, self.pool, self.batch_size, self.max_length = path, pool, batch_size, max_length
        if model is None:
            model, tokenizer = load_token_rm(path, device=None if device == "auto" else device, dtype=dtype)
        self.model, self.tokenizer = model, tokenizer
        self.name = f"token-rm:{path},pool={pool}"
        from .lm_common import ScoreStats

        self.stats = ScoreStats()  # truncated: inputs over max_length that lost their oldest tokens

    @property
    def token_sum_is_score(self) -> bool:
        return self.pool == "sum"

    @torch.no_grad()
    def score_tokens(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[TokenScores]:
        if len(prompts) != len(responses):
            raise FinealignError(f"token-rm scorer: {len(prompts)} prompts but {len(responses)} responses")
        encs = []
        for p, r in zip(prompts, responses):
            try:
                e = encode_response(self.tokenizer, p, r, self.max_length)
            except TooLong:  # docs/long-inputs.md: the oldest tokens go first, here the response's beginning
                full = encode_response(self.tokenizer, p, r, None)
                drop = len(full.input_ids) - self.max_length
                e = EncodedResponse(full.input_ids[drop:], full.response_mask[drop:], full.offsets[drop:], drop)
            if e.truncated:
                self.stats.truncated += 1
                self.stats.truncated_tokens += e.truncated
            encs.append(e)
        dev = next(self.model.parameters()).device
        out: list = [None] * len(encs)
        # batches by length (core.batching): a long item runs alone instead of padding the others to it
        for batch in length_batches([len(e.input_ids) for e in encs], self.batch_size):
            chunk = [encs[i] for i in batch]
            ids, att, (resp,) = pad_right([e.input_ids for e in chunk], self.tokenizer.pad_token_id,
                                          [e.response_mask for e in chunk])
            r = self.model.token_rewards(ids.to(dev), att.to(dev)).float().cpu()
            for k, (i, e) in enumerate(zip(batch, chunk)):
                pos = [j for j, m in enumerate(e.response_mask) if m]
                out[i] = TokenScores(token_ids=[e.input_ids[j] for j in pos], offsets=[tuple(e.offsets[j]) for j in pos],
                                     rewards=r[k, pos].tolist())
        self.stats.scored += len(encs)
        return out

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        pooled = []
        for ts in self.score_tokens(prompts, responses):
            s = float(sum(ts.rewards))
            pooled.append(s / len(ts.rewards) if self.pool == "mean" and ts.rewards else s)
        return pooled

    def close(self) -> None:
        self.model = None


@register_scorer("token-rm", options=TokenRMOptions)
def _token_rm(arg=None, model=None, tokenizer=None, **opts) -> TokenRMScorer:
    if not arg:
        raise FinealignError("token-rm scorer needs a path: token-rm:PATH[,pool=sum|mean]")
    return TokenRMScorer(arg, model=model, tokenizer=tokenizer, **opts)
