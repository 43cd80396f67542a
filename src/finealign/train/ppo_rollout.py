"""Rollouts for PPO: prompt tokens, batched sampling, the actor-critic forward pass, reward placement.

Notation: B rows, P prompt tokens (left-padded), T response tokens (right-padded), V vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..core.ppo import entropy_from_logits, logprobs_from_logits, place_at_last
from ..core.token_map import decode_offsets, map_token_rewards
from ..data.chat import pad_left
from ..errors import FinealignError
from ..rewards.base import Scorer, TokenScorer


class Rollout(NamedTuple):
    """One batch of sampled responses."""

    input_ids: torch.Tensor  # (B, P + T) prompt then response
    attention_mask: torch.Tensor  # (B, P + T) 0 on left padding and after each response's end
    response_mask: torch.Tensor  # (B, T) float: response tokens up to and including the stop token
    prompt_len: int  # P
    texts: list[str]  # decoded responses (stop token and specials removed)
    response_ids: list[list[int]]  # each response's tokens before the stop token
    logprobs: torch.Tensor | None = None  # (B, T) log pi(token) from the sampling pass (``with_logprobs``)
    entropy: torch.Tensor | None = None  # (B, T) entropy of pi at each response position (same)


class Forward(NamedTuple):
    """The actor-critic at the response positions; all (B, T)."""

    logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (left padding gets 0). (B, L) -> (B, L)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def encode_prompts(tokenizer, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded prompt ids and mask (B, P); prompts over ``max_len`` keep their last tokens.

    Returns (ids, mask, number of truncated prompts).
    """
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    cut = sum(len(r) > max_len for r in rows)
    rows = [r[-max_len:] if len(r) > max_len else r for r in rows]
    ids, mask, _ = pad_left(rows, tokenizer.pad_token_id)  # data.chat
    if ids.shape[1] == 0:  # every prompt empty: one column of padding (P >= 1)
        ids, mask = torch.full((len(rows), 1), tokenizer.pad_token_id, dtype=torch.long), torch.zeros((len(rows), 1), dtype=torch.long)
    return ids, mask, cut


@torch.no_grad()
def sample(model, tokenizer, prompt_ids, prompt_mask, *, max_new_tokens: int, temperature: float,
           stop_ids: Sequence[int], min_new_tokens: int = 0, with_logprobs: bool = False) -> Rollout:
    """Sample one response per prompt with ``model.generate`` (pure sampling at ``temperature``).

    ``min_new_tokens`` suppresses the stop tokens until that many tokens were generated.
    ``with_logprobs``: also return log pi(token) and the entropy at each response position, from the
    raw logits of the sampling pass (scaled by ``1/temperature``), which saves PPO the policy forward
    pass over the finished rollout; they equal that pass up to floating-point rounding.
    """
    P = prompt_ids.shape[1]
    gen = model.generate(
        input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, temperature=temperature,
        top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=list(stop_ids), min_new_tokens=min_new_tokens or None,
        output_logits=with_logprobs, return_dict_in_generate=True,
    )
    seq, step_logits = gen.sequences, list(gen.logits or ())
    del gen  # the per-step logits are freed one by one below
    resp = seq[:, P:]
    B, T = resp.shape
    is_stop = torch.zeros_like(resp, dtype=torch.bool)
    for s in stop_ids:
        is_stop |= resp == s
    pos = torch.arange(T).expand(B, T)
    first_stop = torch.where(is_stop, pos, torch.full_like(pos, T)).min(dim=1).values  # (B,) T when none
    ends = (first_stop + 1).clamp(max=T)  # the stop token belongs to the response
    response_mask = (pos < ends[:, None]).float()
    resp = torch.where(response_mask.bool(), resp, torch.full_like(resp, tokenizer.pad_token_id))
    input_ids = torch.cat([prompt_ids, resp], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask.long()], dim=1)
    response_ids = [resp[i, : int(first_stop[i].clamp(max=T))].tolist() for i in range(B)]
    texts = [tokenizer.decode(r, skip_special_tokens=True) for r in response_ids]
    lp = ent = None
    if with_logprobs:  # one (B, V) step at a time: no (B, T, V) stack (issue 17: the rollout's memory peak)
        lp, ent = torch.zeros(B, T, device=resp.device), torch.zeros(B, T, device=resp.device)
        for t in range(T):
            z = _scaled(step_logits[t], temperature)  # raw logits, before any processor
            step_logits[t] = None
            lp[:, t], ent[:, t] = logprobs_from_logits(z, resp[:, t]), entropy_from_logits(z)
        lp, ent = lp * response_mask, ent * response_mask
    return Rollout(input_ids, attention_mask, response_mask, P, texts, response_ids, lp, ent)


HEAD_CHUNK = 16  # response positions per LM-head chunk in the update pass


def chunkable_head(model) -> bool:
    """Whether the logits are exactly ``get_output_embeddings()(last hidden state)``: a linear LM head and
    no logit soft-capping or scaling in the config (Gemma 2, Cohere); else the full logits are used."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return False
    return isinstance(model.get_output_embeddings(), nn.Linear)


def _head_chunk(head: nn.Module, h: torch.Tensor, tokens: torch.Tensor, temperature: float,
                with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    z = _scaled(head(h), temperature)  # (B, C, V)
    lp = logprobs_from_logits(z, tokens)
    return lp, entropy_from_logits(z) if with_entropy else torch.zeros_like(lp)


def head_logprobs(model, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float, with_entropy: bool,
                  chunk: int = HEAD_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(token) and the entropy at each position from the final hidden states, ``chunk`` positions at a
    time. hidden: (B, T, H) (after the final norm), tokens: (B, T) -> two (B, T).

    With gradients on, each chunk's LM head is recomputed in the backward pass (activation
    checkpointing), so at most one chunk's (B, chunk, V) logits exist at a time instead of the
    whole (B, T, V) tensor and its softmax (issue 17: the PPO update's memory peak). Equal to the
    full-logits computation up to floating-point rounding.
    """
    from torch.utils.checkpoint import checkpoint

    head = model.get_output_embeddings()
    grad = torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in head.parameters()))
    parts = []
    for s in range(0, tokens.shape[1], chunk):
        args = (head, hidden[:, s: s + chunk], tokens[:, s: s + chunk], temperature, with_entropy)
        parts.append(checkpoint(_head_chunk, *args, use_reentrant=False) if grad else _head_chunk(*args))
    if not parts:
        empty = hidden.new_zeros(tokens.shape, dtype=torch.float32)
        return empty, empty
    return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature`` in float32; no copy when they already are float32 and temperature is 1."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def trim_padding(input_ids, attention_mask, prompt_len: int):
    """Drop the columns that are padding in every row: leading ones (left-padded prompts) and trailing
    ones (responses that all stopped early). Positions come from the mask, so nothing else changes.

    (B, P + T) -> (ids, mask, P', cut): (B, P' + T - cut) tensors; the response part keeps its first
    ``T - cut`` positions.
    """
    real = attention_mask.bool().any(0)  # (L,)
    L = real.shape[0]
    lead = int(real[:prompt_len].long().argmax()) if bool(real[:prompt_len].any()) else max(prompt_len - 1, 0)
    lead = min(lead, max(prompt_len - 1, 0))  # keep one prompt column: the first response logit comes from it
    resp_real = real[prompt_len:].nonzero()
    end = prompt_len + (int(resp_real[-1]) + 1 if len(resp_real) else 1)
    return input_ids[:, lead:end], attention_mask[:, lead:end], prompt_len - lead, L - end


def pad_right(x: torch.Tensor, cut: int) -> torch.Tensor:
    """(B, T - cut) -> (B, T) with zeros appended (undo ``trim_padding`` on per-response outputs)."""
    return torch.nn.functional.pad(x, (0, cut)) if cut else x


def length_sorted_chunks(rows: Sequence[int], lengths: torch.Tensor, size: int) -> list[list[int]]:
    """Split ``rows`` into chunks of ``size`` after sorting them by ``lengths[row]`` (real tokens), so each
    chunk pads to similar lengths. The union of the chunks is ``rows``; accumulated sums do not depend on
    the grouping."""
    order = sorted(rows, key=lambda r: (int(lengths[r]), r))
    return [order[i: i + size] for i in range(0, len(order), size)]


class ActorCritic(nn.Module):
    """The policy, a scalar value head, and optionally a separate critic backbone.

    ``shared``: values come from the policy's last hidden state (one forward pass for both);
    ``separate``: from the critic's. One module so that DDP wraps and syncs all trainable weights.
    """

    def __init__(self, policy: nn.Module, hidden_size: int, critic: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.value_head = nn.Linear(hidden_size, 1)
        # zero-initialised: every value starts at the bias (set to the first batch's mean return by the
        # trainer), not at the +-1 noise a random head reads off hidden states of norm ~10-50
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def critic_parameters(self) -> list[nn.Parameter]:
        """The critic's trainable weights: the value head, and the separate critic's backbone."""
        mods = [self.value_head] + ([self.critic] if self.critic is not None else [])
        return [p for m in mods for p in m.parameters() if p.requires_grad]

    @torch.no_grad()
    def init_value_bias(self, mean_return: float) -> None:
        """Start every value at ``mean_return``: zero weight, the bias at it."""
        self.value_head.weight.zero_()
        self.value_head.bias.fill_(float(mean_return))

    def forward(self, input_ids, attention_mask, prompt_len: int, temperature: float = 1.0,
                with_entropy: bool = True, with_logprobs: bool = True) -> Forward:
        """Log-probs, values and entropy at the response positions.

        ``with_logprobs=False``: values only (log-probs and entropy are zeros); the separate critic then
        runs alone, and the shared backbone skips its vocabulary projection.
        """
        input_ids, attention_mask, prompt_len, cut = trim_padding(input_ids, attention_mask, prompt_len)
        f = self._forward(input_ids, attention_mask, prompt_len, temperature, with_entropy, with_logprobs)
        return Forward(*(pad_right(x, cut) for x in f))

    def _forward(self, input_ids, attention_mask, prompt_len, temperature, with_entropy, with_logprobs) -> Forward:
        pos = position_ids(attention_mask)
        T = input_ids.shape[1] - prompt_len
        out = None
        chunked = with_logprobs and chunkable_head(self.policy)
        if with_logprobs or self.critic is None:
            out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                              output_hidden_states=self.critic is None or chunked, use_cache=False,
                              logits_to_keep=T + 1 if with_logprobs and not chunked else 1)
        if self.critic is None:
            h = out.hidden_states[-1][:, prompt_len - 1:-1]
        else:  # the critic's decoder only: no vocabulary projection
            dec = self.critic.get_decoder()
            h = dec(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                    use_cache=False).last_hidden_state[:, prompt_len - 1:-1]
        values = self.value_head(h.to(self.value_head.weight.dtype)).squeeze(-1).float()
        if not with_logprobs:
            return Forward(torch.zeros_like(values), values, torch.zeros_like(values))
        tokens = input_ids[:, prompt_len:]
        if chunked:  # the LM head over a few positions at a time: no (B, T, V) logits kept for backward
            lp, ent = head_logprobs(self.policy, out.hidden_states[-1][:, prompt_len - 1:-1], tokens, temperature,
                                    with_entropy)
            return Forward(lp, values, ent)
        logits = _scaled(out.logits[:, -(T + 1):-1], temperature)  # (B, T, V): the LM head skips the prompt
        lp = logprobs_from_logits(logits, tokens)
        ent = entropy_from_logits(logits) if with_entropy else torch.zeros_like(lp)
        return Forward(lp, values, ent)


@torch.no_grad()
def reference_logprobs(policy, ref_model, input_ids, attention_mask, prompt_len: int, temperature: float) -> torch.Tensor:
    """log pi_ref of the response tokens (B, T): ``ref_model``, or ``policy`` with its LoRA adapters off."""
    input_ids, attention_mask, prompt_len, cut = trim_padding(input_ids, attention_mask, prompt_len)
    pos = position_ids(attention_mask)
    T = input_ids.shape[1] - prompt_len

    def run(m):
        out = m(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False,
                logits_to_keep=T + 1)
        return logprobs_from_logits(_scaled(out.logits[:, -(T + 1):-1], temperature), input_ids[:, prompt_len:])

    if ref_model is not None:
        return pad_right(run(ref_model), cut)
    with policy.disable_adapter():
        return pad_right(run(policy), cut)


def score_rewards(scorer: Scorer, prompts: list, rollout: Rollout, tokenizer, granularity: str,
                  check_sum: bool = False) -> tuple[torch.Tensor, list[float]]:
    """The reward model's r_t on the policy's response tokens (B, T), and each response's total.

    A ``TokenScorer``'s per-token rewards are checked against the token-reward contract
    (``rewards.contract.check_token_scores``: units inside the response, finite; with ``check_sum``
    and a scorer whose ``token_sum_is_score``, also that they add up to its ``score``) and mapped onto
    the policy's tokens by character offsets (``granularity="token"``): the stop unit ``(len, len)``
    onto the policy's stop token (or the last kept token of a truncated response), or all summed onto
    the last valid token (``"sequence"``). Any other scorer's score lands on the last valid token. Both
    granularities give the same totals. Raises ``FinealignError`` naming the scorer and the record.
    """
    from ..rewards.contract import check_token_scores

    texts = rollout.texts
    mask = rollout.response_mask
    B, T = mask.shape
    name = getattr(scorer, "name", type(scorer).__name__)
    try:
        if isinstance(scorer, TokenScorer):
            per = scorer.score_tokens(prompts, texts)
            seq = scorer.score(prompts, texts) if check_sum and scorer.token_sum_is_score else None
        else:
            per = None
            totals = [float(s) for s in scorer.score(prompts, texts)]
    except FinealignError as e:
        raise FinealignError(f"reward scorer {name!r} failed: {e}") from e
    except Exception as e:
        raise FinealignError(f"reward scorer {name!r} failed: {type(e).__name__}: {e}") from e
    if per is not None:
        if len(per) != B:
            raise FinealignError(f"reward scorer returned {len(per)} token score lists for {B} responses")
        for i, p in enumerate(per):
            check_token_scores(name, i, texts[i], p, None if seq is None else float(seq[i]))
        totals = [float(sum(p.rewards)) for p in per]
    elif len(totals) != B:
        raise FinealignError(f"reward scorer returned {len(totals)} scores for {B} responses")
    if per is None or granularity == "sequence":
        return place_at_last(torch.tensor(totals, dtype=torch.float32), mask), totals
    out = torch.zeros((B, T), dtype=torch.float32)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    n_valid = mask.sum(1).long().tolist()
    for i, p in enumerate(per):
        ids = rollout.response_ids[i]  # the text tokens; the stop token, when sampled, follows them
        _, offsets = decode_offsets(ids, decode)
        if n_valid[i] > len(ids):
            offsets = offsets + [(len(texts[i]), len(texts[i]))]
        mapped = map_token_rewards(p.offsets, p.rewards, offsets)
        out[i, : len(mapped)] = torch.tensor(mapped)
    return out, totals
