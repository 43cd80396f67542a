"""The ``direct:`` and ``flr:`` scorer specs: options typed and checked once (``rewards.options``), then the
transformers scorer or, with ``backend=vllm``, the vLLM one (:mod:`finealign.rewards.vllm_scorers`).

Kept apart from the scorers themselves so that the vLLM adapters, which build on them, sit above
them in the import graph.
"""

from __future__ import annotations

from .base import register_scorer
from .direct import DirectConfig, DirectScorer
from .flr import FLRConfig, FLRScorer
from .followups import FollowupSet
from .options import DirectOptions, FLROptions
from .vllm_scorers import VllmDirectScorer, VllmFLRScorer


@register_scorer("direct", options=DirectOptions)
def _direct(arg=None, model=None, tokenizer=None, *, backend="transformers", device="auto", dtype="float32",
            batch_size=4, max_length=None):
    cfg = DirectConfig(model=arg or "smollm2-135m-instruct", dtype=dtype, device=device, batch_size=batch_size,
                       max_length=max_length)
    if backend == "vllm":  # rewards/vllm_scorers.py
        return VllmDirectScorer(cfg, tokenizer=tokenizer)
    return DirectScorer(cfg, model=model, tokenizer=tokenizer)


@register_scorer("flr", options=FLROptions)
def _flr(arg=None, model=None, tokenizer=None, followup_set: FollowupSet | None = None, *, backend="transformers",
         mode="loglik", followups=None, dims=None, strategy="tree", device="auto", dtype="float32", batch_size=4,
         max_length=None):
    cfg = FLRConfig(model=arg or "smollm2-135m-instruct", mode=mode, followups=followups,
                    dims=tuple(dims) if dims else None, batch_size=batch_size, dtype=dtype, device=device,
                    max_length=max_length, strategy=strategy)
    if backend == "vllm":  # rewards/vllm_scorers.py
        return VllmFLRScorer(cfg, tokenizer=tokenizer, followups=followup_set)
    return FLRScorer(cfg, model=model, tokenizer=tokenizer, followups=followup_set)
