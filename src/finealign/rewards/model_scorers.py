"""The ``direct:`` and ``flr:`` scorer specs: options parsed once, then the transformers scorer or,
with ``backend=vllm``, the vLLM one (:mod:`finealign.rewards.vllm_scorers`).

Kept apart from the scorers themselves so that the vLLM adapters, which build on them, sit above
them in the import graph.
"""

from __future__ import annotations

from ..errors import FinealignError
from .base import register_scorer
from .direct import DirectConfig, DirectScorer
from .lm_common import to_int
from .flr import FLRConfig, FLRScorer
from .followups import FollowupSet
from .vllm_scorers import VllmDirectScorer, VllmFLRScorer, check_backend


def _opt_int(options: dict, key: str):
    return to_int(key, options[key]) if key in options else None


@register_scorer("direct")
def _direct(arg=None, model=None, tokenizer=None, **options):
    backend = check_backend(options)  # backend=vllm: rewards/vllm_scorers.py
    known = {"dtype", "device", "batch_size", "max_length"}
    bad = sorted(set(options) - known)
    if bad:
        raise FinealignError(f"direct scorer: unknown option(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    cfg = DirectConfig(model=arg or "smollm2-135m-instruct", dtype=options.get("dtype", "float32"),
                       device=options.get("device", "auto"), batch_size=_opt_int(options, "batch_size") or 4,
                       max_length=_opt_int(options, "max_length"))
    if backend == "vllm":
        return VllmDirectScorer(cfg, tokenizer=tokenizer)
    return DirectScorer(cfg, model=model, tokenizer=tokenizer)


_OPTIONS = {"mode", "followups", "dims", "batch_size", "dtype", "device", "max_length", "strategy"}


@register_scorer("flr")
def _flr(arg=None, model=None, tokenizer=None, followup_set: FollowupSet | None = None, **options):
    backend = check_backend(options)  # backend=vllm: rewards/vllm_scorers.py
    bad = sorted(set(options) - _OPTIONS)
    if bad:
        raise FinealignError(f"flr scorer: unknown option(s) {', '.join(bad)}; known: {', '.join(sorted(_OPTIONS))}")
    dims = options.get("dims")
    cfg = FLRConfig(
        model=arg or "smollm2-135m-instruct", mode=options.get("mode", "loglik"), followups=options.get("followups"),
        dims=tuple(dims.split("+")) if isinstance(dims, str) else (tuple(dims) if dims else None),
        batch_size=to_int("batch_size", options.get("batch_size", 4)), dtype=options.get("dtype", "float32"),
        device=options.get("device", "auto"),
        max_length=to_int("max_length", options["max_length"], 8) if options.get("max_length") else None,
        strategy=options.get("strategy", "tree"))
    if backend == "vllm":
        return VllmFLRScorer(cfg, tokenizer=tokenizer, followups=followup_set)
    return FLRScorer(cfg, model=model, tokenizer=tokenizer, followups=followup_set)
