"""FLR and direct scoring on vLLM: ``flr:MODEL,backend=vllm`` and ``direct:MODEL,backend=vllm``.

The scorers are the transformers ones (same chat rendering, same follow-up plans, same token ids,
same aggregation); only the model pass differs: each (context + follow-up) or (prompt + response)
token sequence is one vLLM request with ``prompt_logprobs=0``, and the log-probabilities of the
scored tokens are read from the output (``models.vllm.parse_prompt_logprobs``). So the scores equal
the transformers backend's up to the two engines' kernels (float32 on both: about 1e-5; bfloat16:
about 1e-2 in a mean log-probability).

FLR's ``reference`` mode reads raw logits, which vLLM does not return: it is refused here.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import FinealignError
from ..models.vllm import logprob_request, parse_prompt_logprobs, run_requests
from .direct import DirectConfig, DirectScorer
from .flr import FLRConfig, FLRScorer
from .options import BACKENDS  # noqa: F401  (the `backend` option's choices; checked in rewards.options)


class _ConfigOnly:
    """What the scorers read from a model object besides its forward pass: ``config``."""

    def __init__(self, config):
        self.config = config


def _engine_and_tokenizer(spec: str, dtype: str, llm: Any = None, tokenizer: Any = None):
    """``(llm, tokenizer, stand-in model)``: vLLM's engine (loaded unless given) and the HF tokenizer."""
    from transformers import AutoConfig

    from ..models.loading import load_tokenizer, resolve_spec
    from ..models.vllm import load_vllm

    tokenizer = tokenizer or load_tokenizer(spec)
    llm = llm if llm is not None else load_vllm(spec, dtype=dtype)
    return llm, tokenizer, _ConfigOnly(AutoConfig.from_pretrained(resolve_spec(spec)))


def flr_requests(contexts: list[list[int]], segments, pairs) -> tuple[list, list[list[int]]]:
    """The vLLM requests of one FLR plan: one per (context, follow-up), B x F in row-major order,
    and for each the sequence positions whose token log-probabilities are averaged.

    ``segments[f]``: the token ids the chat template adds for follow-up f; ``pairs[f]``: its scored
    (path index p, target) pairs, path index p reading the token at position ``len(context) + p``.
    The sequence stops at the last scored token (later tokens change nothing that is read).
    """
    reqs, positions = [], []
    for ctx in contexts:
        n = len(ctx)
        for seg, ps in zip(segments, pairs):
            last = max(p for p, _ in ps)
            ids = list(ctx) + list(seg[: last + 1])
            for p, t in ps:
                if ids[n + p] != t:
                    raise FinealignError("follow-up target token differs from the sequence (reference mode "
                                         "is not supported by the vLLM backend)")
            reqs.append(logprob_request(ids))
            positions.append([n + p for p, _ in ps])
    return reqs, positions


class VllmFLRScorer(FLRScorer):
    """``FLRScorer`` whose follow-up log-likelihoods come from vLLM prompt log-probabilities."""

    name = "flr"

    def __init__(self, config: FLRConfig = FLRConfig(), llm: Any = None, tokenizer: Any = None, followups=None):
        if config.mode == "reference":
            raise FinealignError("flr mode=reference reads raw logits, which vLLM does not return; use "
                                 "backend=transformers for it")
        self.llm, tok, stand_in = _engine_and_tokenizer(config.model, config.dtype, llm, tokenizer)
        super().__init__(config, model=stand_in, tokenizer=tok, followups=followups)

    def _values(self, contexts: list[list[int]], plan) -> torch.Tensor:
        """(B, F) mean log p of each follow-up's scored tokens after each context."""
        reqs, positions = flr_requests(contexts, plan.segments, plan.pairs)
        outs = run_requests(self.llm, reqs)
        vals = [sum(v) / len(v) for out, pos in zip(outs, positions) for v in [parse_prompt_logprobs(out, pos)]]
        return torch.tensor(vals, dtype=torch.float32).reshape(len(contexts), len(plan.segments))


class VllmDirectScorer(DirectScorer):
    """``DirectScorer`` whose response-token log-probabilities come from vLLM."""

    name = "direct"

    def __init__(self, config: DirectConfig = DirectConfig(), llm: Any = None, tokenizer: Any = None):
        self.llm, tok, stand_in = _engine_and_tokenizer(config.model, config.dtype, llm, tokenizer)
        super().__init__(config, model=stand_in, tokenizer=tok)

    def _token_logprobs(self, encs) -> list[torch.Tensor]:
        """Per response, the log-probabilities (1-D) of its scored tokens (``enc.scored[t]``: token t)."""
        outs = run_requests(self.llm, [logprob_request(e.ids) for e in encs])
        return [torch.tensor(parse_prompt_logprobs(o, [t for t, s in enumerate(e.scored) if s]), dtype=torch.float32)
                for o, e in zip(outs, encs)]

