"""Any finealign scorer as a TRL reward function (``GRPOTrainer`` / ``RLOOTrainer`` ``reward_funcs``).

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns)``
and expects one float (or None) per completion. Both of TRL's data formats are handled:

* standard: ``prompts`` and ``completions`` are strings;
* conversational: ``prompts`` are lists of chat messages, ``completions`` lists holding one
  assistant message (``[{"role": "assistant", "content": ...}]``).

Example::

    from trl import GRPOConfig, GRPOTrainer
    from finealign.rewards import load_scorer
    from finealign.rewards.trl_adapter import as_reward_func

    flr = as_reward_func(load_scorer("flr:smollm2-135m-instruct"))
    trainer = GRPOTrainer(model=..., reward_funcs=[flr], args=GRPOConfig(...), train_dataset=...)
"""

from __future__ import annotations

from typing import Any, Callable

from ..data.records import Prompt
from ..errors import FinealignError
from .base import Scorer, load_scorer


def completion_text(completion: Any) -> str:
    """A TRL completion (a string, or a list of messages whose last is the assistant's) as text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict) and "content" in completion:
        return str(completion["content"])
    if isinstance(completion, list) and completion and all(isinstance(m, dict) for m in completion):
        return "".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant") == "assistant")
    raise FinealignError(f"cannot read a TRL completion of type {type(completion).__name__}")


def prompt_of(prompt: Any) -> Prompt:
    """A TRL prompt (a string or a list of chat messages) as a finealign prompt."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        return [{"role": m["role"], "content": str(m.get("content", ""))} for m in prompt]
    raise FinealignError(f"cannot read a TRL prompt of type {type(prompt).__name__}")


def as_reward_func(scorer: Scorer | str, *, name: str | None = None, empty_reward: float | None = None,
                   scale: float = 1.0) -> Callable[..., list[float]]:
    """Wrap ``scorer`` (or a scorer spec) as ``f(prompts, completions, **kwargs) -> list[float]``.

    ``empty_reward``: the reward of an empty completion (a sampled policy can produce one; most
    scorers refuse empty text); ``None`` gives the scorer's minimum over the other completions of
    the batch (0.0 when all are empty). ``scale`` multiplies every reward. The function's
    ``__name__`` (TRL logs rewards under it) is ``name`` or the scorer's name.
    """
    sc = load_scorer(scorer) if isinstance(scorer, str) else scorer

    def reward(prompts=None, completions=None, **kwargs) -> list[float]:
        if completions is None:
            raise FinealignError("reward function called without completions")
        texts = [completion_text(c) for c in completions]
        if prompts is None:
            prompts = [""] * len(texts)
        if len(prompts) != len(texts):
            raise FinealignError(f"{len(prompts)} prompts for {len(texts)} completions")
        ps = [prompt_of(p) for p in prompts]
        idx = [i for i, t in enumerate(texts) if t.strip()]
        out: list[float | None] = [None] * len(texts)
        if idx:
            vals = sc.score([ps[i] for i in idx], [texts[i] for i in idx])
            for i, v in zip(idx, vals):
                out[i] = float(v) * scale
        fill = empty_reward if empty_reward is not None else (
            min(v for v in out if v is not None) if idx else 0.0)
        return [fill if v is None else v for v in out]

    reward.__name__ = name or getattr(sc, "name", None) or type(sc).__name__
    reward.__qualname__ = reward.__name__
    reward.scorer = sc  # type: ignore[attr-defined]
    return reward
