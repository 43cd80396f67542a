"""The "direct" baseline scorer: mean log p(response | prompt) under a causal LM (the FLR paper's
baseline). The helpers every language-model scorer shares are in ``rewards.lm_common``.

``direct:MODEL[,dtype=bfloat16][,device=cuda][,batch_size=8][,max_length=2048]``. The (prompt,
response) is rendered by ``data.chat.render_pair`` (the closed assistant turn; a prompt that already
carries the template is used as it is); only the response's own text tokens are scored (template
tokens are conditioned on). An empty response is scored too: its score is the log-probability of
ending the turn at once (the template's first end-of-turn token; the EOS token without a template).
Too-long inputs lose their oldest tokens (never the response's end), with a warning;
``stats.truncated`` counts them. It is also a token scorer: ``score_tokens`` returns each response
token's log-probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.batching import length_batches
from ..core.flr import token_logprobs
from ..data.chat import TurnText, encode_pair, encode_with_span, pad_right, render_turn, with_stop_token  # noqa: F401
from ..data.records import Prompt
from ..errors import FinealignError
from .base import TokenScorer, TokenScores
from .lm_common import ScoreStats, load_lm, model_max_length, to_int, warn_truncated  # noqa: F401


class EmptyResponseError(FinealignError):
    """A response with no text; ``index`` is its position in the scored batch."""

    def __init__(self, index: int, scorer: str):
        self.index = index
        super().__init__(f"response {index} is empty: the {scorer} scorer needs response text "
                         "(drop or fill empty responses before scoring)")


# ---------------------------------------------------------------- the direct scorer

@dataclass(frozen=True)
class DirectConfig:
    """Response likelihood scorer. ``max_length`` None = the model's window."""

    model: str = "smollm2-135m-instruct"
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 4
    max_length: int | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise FinealignError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 8:
            raise FinealignError(f"max_length must be >= 8, got {self.max_length}")


@dataclass
class _Encoded:
    ids: list[int]
    scored: list[bool]  # token t is a response token (predicted from position t - 1)
    offsets: list[tuple[int, int]]  # relative to the response text


class DirectScorer(TokenScorer):
    """Mean log p(response tokens | prompt, earlier response tokens)."""

    name = "direct"
    token_sum_is_score = False  # the score is the mean log-probability

    def __init__(self, config: DirectConfig = DirectConfig(), model=None, tokenizer=None):
        self.config = config
        if model is None:
            model, tokenizer = load_lm(config.model, config.dtype, config.device)
        self.model, self.tokenizer = model, tokenizer
        self.max_length = model_max_length(model, config.max_length)
        self.stats = ScoreStats()

    def _encode(self, prompt: Prompt, response: str, index: int) -> _Encoded:
        # data.chat: the closed assistant turn; its stop token (end of turn) is scored with the response
        enc = with_stop_token(encode_pair(self.tokenizer, prompt, response), len(response), self.tokenizer.eos_token_id)
        ids, inside, offs = list(enc.input_ids), list(enc.response_mask), list(enc.offsets)
        inside[0] = False  # the first token has no prediction
        last = max((k for k, m in enumerate(inside) if m), default=len(ids) - 1)
        ids, inside, offs = ids[: last + 1], inside[: last + 1], offs[: last + 1]  # causal: nothing after is read
        if len(ids) > self.max_length:
            drop = len(ids) - self.max_length
            ids, inside, offs = ids[drop:], inside[drop:], offs[drop:]
            inside[0] = False
            warn_truncated(self.stats, f"response {index} with its prompt", drop, self.max_length)
        if not any(inside):
            raise EmptyResponseError(index, self.name)
        rel = [(max(s, 0), max(e, 0)) for s, e in offs]
        return _Encoded(ids, inside, rel)

    @torch.no_grad()
    def _token_logprobs(self, encs: list[_Encoded]) -> list[torch.Tensor]:
        """Per-row log-probabilities of the scored tokens (1-D tensors)."""
        dev = self.model.device
        # keep: (B, T) positions whose logits predict a scored token
        ids, attn, (keep,) = pad_right([e.ids for e in encs], self.tokenizer.pad_token_id or 0,
                                       [e.scored[1:] + [False] for e in encs])
        out = self.model(input_ids=ids.to(dev), attention_mask=attn.to(dev), logits_to_keep=keep.to(dev), use_cache=False)
        logits = out.logits.reshape(-1, out.logits.shape[-1])  # (K, V), rows in (b, t) order
        targets = ids[:, 1:][keep[:, :-1]].to(dev)
        lp = token_logprobs(logits[None], targets[None])[0].cpu()
        counts = keep.sum(-1).tolist()
        return list(torch.split(lp, counts))

    def _batches(self, prompts, responses):
        if len(prompts) != len(responses):
            raise FinealignError(f"{len(prompts)} prompts but {len(responses)} responses")
        encs = [self._encode(p, r, i) for i, (p, r) in enumerate(zip(prompts, responses))]
        lps: list = [None] * len(encs)
        # batches by length (core.batching): a long item runs alone instead of padding the others to it
        for batch in length_batches([len(e.ids) for e in encs], self.config.batch_size):
            for i, lp in zip(batch, self._token_logprobs([encs[i] for i in batch])):
                lps[i] = lp
        yield encs, lps
        self.stats.scored += len(encs)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        return [float(lp.mean()) for _, lps in self._batches(prompts, responses) for lp in lps]

    def score_tokens(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[TokenScores]:
        out = []
        for chunk, lps in self._batches(prompts, responses):
            for e, lp in zip(chunk, lps):
                sel = [k for k, s in enumerate(e.scored) if s]
                out.append(TokenScores([e.ids[k] for k in sel], [e.offsets[k] for k in sel], lp.tolist()))
        return out

    def close(self) -> None:
        self.model = None
