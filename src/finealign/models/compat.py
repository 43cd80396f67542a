"""Small shims over transformers API renames, so finealign's own calls raise no deprecation warnings.

transformers 5.2x renamed the key/value cache argument and output field of every model from
``past_key_values`` to ``cache`` (the old name warns and goes in 5.40), and gradient checkpointing
to activation checkpointing. ``cache_kwargs``, ``output_cache`` and ``enable_activation_checkpointing``
use whichever names the installed version has.
"""

from __future__ import annotations

import inspect

__all__ = ["cache_kwargs", "enable_activation_checkpointing", "output_cache"]


def _forward_params(model) -> set[str]:
    fwd = getattr(model, "get_base_model", lambda: model)().forward
    try:
        return set(inspect.signature(fwd).parameters)
    except (TypeError, ValueError):
        return set()


def cache_kwargs(model, cache) -> dict:
    """``{"cache": cache}`` when ``model.forward`` takes ``cache``, else ``{"past_key_values": cache}``."""
    return {"cache": cache} if "cache" in _forward_params(model) else {"past_key_values": cache}


def output_cache(output):
    """The key/value cache a forward pass returned (``output.cache``, or ``past_key_values`` before the rename)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def enable_activation_checkpointing(model) -> None:
    """Activation (gradient) checkpointing on every decoder layer of ``model`` (a transformers model or
    a PEFT wrapper of one), non-reentrant: in training mode each layer keeps only its input and
    recomputes its activations in the backward pass (Chen et al. 2016, arXiv 1604.06174). Eval-mode
    passes (sampling, scoring) are unaffected."""
    base = getattr(model, "get_base_model", lambda: model)()
    if hasattr(base, "activation_checkpointing_enable"):
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # transformers before the rename
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
