"""Any finealign scorer as a TRL reward function (``GRPOTrainer`` / ``RLOOTrainer`` ``reward_funcs``).

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns)``
and expects one float (or None) per completion. Both of TRL's data formats are handled:

* standard: ``prompts`` and ``completions`` are strings;
* conversational: ``prompts`` are lists of chat messages, ``completions`` lists of messages
  (``[{"role": "assistant", "content": ...}]``), in every shape TRL 1.16 passes: ``content`` as a
  string or as typed text blocks (``[{"type": "text", "text": ...}]``, its multimodal path),
  assistant turns with ``tool_calls`` and ``content`` None, ``tool`` turns. ``data.chat`` reads
  them all; a prompt that already carries the chat template is scored as it is.

Example::

    from trl import GRPOConfig, GRPOTrainer
    from finealign.rewards import load_scorer
    from finealign.rewards.trl_adapter import as_reward_func

    flr = as_reward_func(load_scorer("flr:smollm2-135m-instruct"))
    rm = as_reward_func("token-rm:runs/rm", reduce="sum")  # a token RM's rewards summed: a sequence reward
    trainer = GRPOTrainer(model=..., reward_funcs=[flr], args=GRPOConfig(...), train_dataset=...)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..data import chat
from ..data.records import FieldError, Prompt
from ..errors import FinealignError
from .base import Scorer, TokenScorer, load_scorer


def completion_text(completion: Any) -> str:
    """A TRL completion as the text to score: a string, or messages (``data.chat.completion_text``:
    the assistant turns' text, text blocks joined, tool calls as ``<tool_call>`` text, tool answers
    left out)."""
    try:
        return chat.completion_text(completion, "completion")
    except FieldError as e:
        raise FinealignError(f"cannot read a TRL completion: {e}") from None


def prompt_of(prompt: Any) -> Prompt:
    """A TRL prompt (a string, or messages in any shape TRL passes) as a finealign prompt
    (``data.chat.normalize_prompt``). A string that already carries the chat template stays as it
    is: every scorer then uses it as it is."""
    try:
        return chat.normalize_prompt(prompt, "prompt")
    except FieldError as e:
        raise FinealignError(f"cannot read a TRL prompt: {e}") from None


REDUCTIONS = ("sum", "mean", "min", "last")


def reduce_token_rewards(rewards: Sequence[float], how: str) -> float:
    """One sequence reward from a response's per-token rewards (``TokenScores.rewards``, the terminal unit
    last): ``sum`` (the scorer's sequence score), ``mean``, ``min`` (the worst token), ``last`` (the
    terminal reward, on the stop token). No rewards: 0.0."""
    if how not in REDUCTIONS:
        raise FinealignError(f"reduce must be one of {', '.join(REDUCTIONS)}, got {how!r}")
    vals = [float(r) for r in rewards]
    if not vals:
        return 0.0
    return {"sum": sum, "mean": lambda v: sum(v) / len(v), "min": min, "last": lambda v: v[-1]}[how](vals)


def as_reward_func(scorer: Scorer | str, *, name: str | None = None, empty_reward: float | None = None,
                   scale: float = 1.0, reduce: str | None = None) -> Callable[..., list[float]]:
    """Wrap ``scorer`` (or a scorer spec) as ``f(prompts, completions, **kwargs) -> list[float]``.

    ``empty_reward``: a fixed reward for an empty completion (a sampled policy can produce one);
    ``None`` (the default) scores it as it is, like any other completion (every scorer handles
    empty text). ``scale`` multiplies every reward. ``reduce`` (sum | mean | min | last) turns a token
    scorer's per-token rewards into the one float TRL takes (``reduce_token_rewards``): what GRPO/RLOO
    get is a *sequence* reward whichever reduction is chosen; ``None`` uses ``scorer.score``. The
    function's ``__name__`` (TRL logs rewards under it) is ``name`` or the scorer's name (with the
    reduction).
    """
    sc = load_scorer(scorer) if isinstance(scorer, str) else scorer
    if reduce is not None:
        reduce_token_rewards([], reduce)  # checks the name
        if not isinstance(sc, TokenScorer):
            raise FinealignError(f"reduce={reduce!r} needs a token scorer; {getattr(sc, 'name', sc)!r} gives one "
                                 "score per response (leave reduce out)")

    def score(ps, ts) -> list[float]:
        if reduce is None:
            return sc.score(ps, ts)
        return [reduce_token_rewards(t.rewards, reduce) for t in sc.score_tokens(ps, ts)]

    def reward(prompts=None, completions=None, **kwargs) -> list[float]:
        if completions is None:
            raise FinealignError("reward function called without completions")
        texts = [completion_text(c) for c in completions]
        if prompts is None:
            prompts = [""] * len(texts)
        if len(prompts) != len(texts):
            raise FinealignError(f"{len(prompts)} prompts for {len(texts)} completions")
        ps = [prompt_of(p) for p in prompts]
        idx = [i for i, t in enumerate(texts) if empty_reward is None or t.strip()]
        out = [float(empty_reward) if empty_reward is not None else 0.0] * len(texts)
        if idx:
            vals = score([ps[i] for i in idx], [texts[i] for i in idx])
            for i, v in zip(idx, vals):
                out[i] = float(v) * scale
        return out

    base = getattr(sc, "name", None) or type(sc).__name__
    reward.__name__ = name or (base if reduce is None else f"{base}[{reduce}]")
    reward.__qualname__ = reward.__name__
    reward.scorer = sc  # type: ignore[attr-defined]
    return reward
