"""Helpers every language-model scorer shares (``direct``, ``flr``, ``dpo_implicit``, ``seqcls``, ``token_rm``,
the vLLM scorers): counters of truncated inputs, the model window, integer options, loading the model.
Chat rendering lives in ``data.chat``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from ..errors import FinealignError

__all__ = ["ScoreStats", "load_lm", "model_max_length", "to_int", "warn_truncated"]


@dataclass
class ScoreStats:
    """Counters a scorer keeps across calls (``truncated``: inputs that lost their oldest tokens)."""

    scored: int = 0
    truncated: int = 0
    truncated_tokens: int = 0


def model_max_length(model, override: int | None = None) -> int:
    """``override``, else the model config's ``max_position_embeddings`` (also a text sub-config's), else 2048."""
    if override:
        return int(override)
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) or getattr(getattr(cfg, "text_config", None), "max_position_embeddings", None)
    return int(n) if n else 2048


def warn_truncated(stats: ScoreStats, what: str, dropped: int, limit: int) -> None:
    """Count a truncated input in ``stats`` and warn, naming how many of its oldest tokens were dropped."""
    stats.truncated += 1
    stats.truncated_tokens += dropped
    warnings.warn(f"{what} exceeds the model window of {limit} tokens: dropped its {dropped} oldest tokens "
                  f"({stats.truncated} truncated so far)", stacklevel=3)


def to_int(name: str, value, minimum: int = 1) -> int:
    """A scorer option as an int >= ``minimum``; FinealignError naming the option otherwise."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise FinealignError(f"scorer option {name}={value!r}: expected an integer") from None
    if v < minimum:
        raise FinealignError(f"scorer option {name}={value!r}: must be >= {minimum}")
    return v


def load_lm(model: str, dtype: str, device: str):
    """``models.load_model``: the (model, tokenizer) of a scorer's model spec."""
    from ..models import load_model

    return load_model(model, dtype=dtype, device=device)
