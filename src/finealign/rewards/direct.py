"""The "direct" baseline scorer: mean log p(response | prompt) under a causal LM (the FLR paper's
baseline), plus the chat-rendering helpers that every language-model scorer shares.

``direct:MODEL[,dtype=bfloat16][,device=cuda][,batch_size=8][,max_length=2048]``. The response is
rendered as the assistant turn after the prompt with the model's chat template; only the
response's own text tokens are scored (template tokens are conditioned on). Too-long inputs lose
their oldest tokens (never the response's end), with a warning; ``stats.truncated`` counts them.
It is also a token scorer: ``score_tokens`` returns each response token's log-probability.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.flr import token_logprobs
from ..data.records import Message, Prompt, as_messages
from ..errors import FinealignError
from .base import TokenScorer, TokenScores, register_scorer


class EmptyResponseError(FinealignError):
    """A response with no text; ``index`` is its position in the scored batch."""

    def __init__(self, index: int, scorer: str):
        self.index = index
        super().__init__(f"response {index} is empty: the {scorer} scorer needs response text "
                         "(drop or fill empty responses before scoring)")


@dataclass
class ScoreStats:
    """Counters a scorer keeps across calls (``truncated``: inputs that lost their oldest tokens)."""

    scored: int = 0
    truncated: int = 0
    truncated_tokens: int = 0


# ---------------------------------------------------------------- chat rendering helpers

def render_chat(tokenizer, messages: list[Message]) -> str:
    """The chat template's text for ``messages`` (no generation prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        raise FinealignError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
                             "this scorer renders conversations with it")
    return tokenizer.apply_chat_template(messages, tokenize=False)


@dataclass(frozen=True)
class TurnText:
    """``full = context + segment``; the turn's content is ``segment[start:end]``."""

    context: str
    segment: str
    start: int
    end: int


def render_turn(tokenizer, context: list[Message], role: str, content: str) -> TurnText:
    """Render ``context`` + one more turn and locate the new turn's content in the added text.

    The content is found where the added text minus the content equals the text the template adds
    for an empty turn, so a content string that also occurs in the template markup is not mistaken.
    """
    ctx = render_chat(tokenizer, context)
    full = render_chat(tokenizer, context + [{"role": role, "content": content}])
    empty = render_chat(tokenizer, context + [{"role": role, "content": ""}])
    if not full.startswith(ctx) or not empty.startswith(ctx):
        raise FinealignError("the chat template renders a conversation differently once a turn is added "
                             "(the context is not a prefix); this scorer cannot share the context")
    seg, seg_empty = full[len(ctx):], empty[len(ctx):]
    for text in (content, content.strip()):
        i = seg.find(text)
        while i >= 0 and text:
            if seg[:i] + seg[i + len(text):] == seg_empty:
                return TurnText(ctx, seg, i, i + len(text))
            i = seg.find(text, i + 1)
    raise FinealignError("cannot locate the turn's text in the chat template's output")


def encode_with_span(tokenizer, text: str, start: int, end: int) -> tuple[list[int], list[bool], list[tuple[int, int]]]:
    """Token ids of ``text`` (no added special tokens), which tokens overlap ``text[start:end]``,
    and every token's character offsets."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = [tuple(o) for o in enc["offset_mapping"]]
    inside = [e > start and s < end for s, e in offs]
    return list(enc["input_ids"]), inside, offs


def model_max_length(model, override: int | None = None) -> int:
    if override:
        return int(override)
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) or getattr(getattr(cfg, "text_config", None), "max_position_embeddings", None)
    return int(n) if n else 2048


def warn_truncated(stats: ScoreStats, what: str, dropped: int, limit: int) -> None:
    stats.truncated += 1
    stats.truncated_tokens += dropped
    warnings.warn(f"{what} exceeds the model window of {limit} tokens: dropped its {dropped} oldest tokens "
                  f"({stats.truncated} truncated so far)", stacklevel=3)


def to_int(name: str, value, minimum: int = 1) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise FinealignError(f"scorer option {name}={value!r}: expected an integer") from None
    if v < minimum:
        raise FinealignError(f"scorer option {name}={value!r}: must be >= {minimum}")
    return v


def _load(model: str, dtype: str, device: str):
    from ..models import load_model

    return load_model(model, dtype=dtype, device=device)


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

    def __init__(self, config: DirectConfig = DirectConfig(), model=None, tokenizer=None):
        self.config = config
        if model is None:
            model, tokenizer = _load(config.model, config.dtype, config.device)
        self.model, self.tokenizer = model, tokenizer
        self.max_length = model_max_length(model, config.max_length)
        self.stats = ScoreStats()

    def _encode(self, prompt: Prompt, response: str, index: int) -> _Encoded:
        if not response or not response.strip():
            raise EmptyResponseError(index, self.name)
        turn = render_turn(self.tokenizer, as_messages(prompt), "assistant", response)
        base = len(turn.context) + turn.start
        ids, inside, offs = encode_with_span(self.tokenizer, turn.context + turn.segment, base, len(turn.context) + turn.end)
        inside[0] = False  # the first token has no prediction
        if len(ids) > self.max_length:
            drop = len(ids) - self.max_length
            ids, inside, offs = ids[drop:], inside[drop:], offs[drop:]
            inside[0] = False
            warn_truncated(self.stats, f"response {index} with its prompt", drop, self.max_length)
        if not any(inside):
            raise EmptyResponseError(index, self.name)
        rel = [(max(s - base, 0), max(e - base, 0)) for s, e in offs]
        return _Encoded(ids, inside, rel)

    @torch.no_grad()
    def _token_logprobs(self, encs: list[_Encoded]) -> list[torch.Tensor]:
        """Per-row log-probabilities of the scored tokens (1-D tensors)."""
        dev = self.model.device
        t = max(len(e.ids) for e in encs)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(encs), t), pad, dtype=torch.long)
        attn = torch.zeros(len(encs), t, dtype=torch.long)
        keep = torch.zeros(len(encs), t, dtype=torch.bool)  # positions whose logits predict a scored token
        for b, e in enumerate(encs):
            ids[b, : len(e.ids)] = torch.tensor(e.ids)
            attn[b, : len(e.ids)] = 1
            keep[b, : len(e.ids) - 1] = torch.tensor(e.scored[1:])
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
        bs = self.config.batch_size
        for i in range(0, len(encs), bs):
            chunk = encs[i: i + bs]
            yield chunk, self._token_logprobs(chunk)
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


def _opt_int(options: dict, key: str):
    return to_int(key, options[key]) if key in options else None


@register_scorer("direct")
def _direct(arg=None, model=None, tokenizer=None, **options):
    known = {"dtype", "device", "batch_size", "max_length"}
    bad = sorted(set(options) - known)
    if bad:
        raise FinealignError(f"direct scorer: unknown option(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    cfg = DirectConfig(model=arg or "smollm2-135m-instruct", dtype=options.get("dtype", "float32"),
                       device=options.get("device", "auto"), batch_size=_opt_int(options, "batch_size") or 4,
                       max_length=_opt_int(options, "max_length"))
    return DirectScorer(cfg, model=model, tokenizer=tokenizer)
