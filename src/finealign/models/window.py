"""Fitting inputs into a model's window: the one policy of ``docs/long-inputs.md``.

The oldest context goes first. A prompt that does not fit its token budget loses its oldest turns
(the system message stays, and so does the last turn), then the oldest text of its earliest
remaining turn, then of the system message; the template's own tokens are never cut, so the model
still sees a well-formed conversation. What was cut is returned, so every verb can count and report
it. Where the text a verb works on cannot fit at all, the verb refuses that record instead (see the
policy page); nothing here decides that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..data.records import Prompt, as_messages
from ..errors import FinealignError

__all__ = ["MIN_CONTEXT", "Fitted", "fit_prompt", "model_window"]

MIN_CONTEXT = 16  # tokens a prompt keeps at least; a budget below it is a settings error


def model_window(model, override: int | None = None) -> int | None:
    """The model's context window in tokens (``override`` when given and smaller), or None if the
    config states none (``max_position_embeddings``, ``n_positions``, ...)."""
    base = getattr(model, "get_base_model", lambda: model)()
    cfg = getattr(base, "config", None)
    window = None
    for c in (cfg, getattr(cfg, "text_config", None)):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            v = getattr(c, key, None)
            if isinstance(v, int) and v > 0:
                window = v
                break
        if window:
            break
    if override is not None:
        window = int(override) if window is None else min(window, int(override))
    return window


@dataclass(frozen=True)
class Fitted:
    """A prompt that fits: ``prompt`` (the original object when nothing was cut), its rendered
    length ``tokens``, and ``cut_tokens`` removed (0 = untouched)."""

    prompt: Prompt
    tokens: int
    cut_tokens: int


def _generation_render(tokenizer) -> Callable[[Prompt], str]:
    from ..data.chat import render_prompt  # the one rendering (generation, scorers, trainers)

    return lambda p: render_prompt(tokenizer, p)


def _cut_left(tokenizer, text: str, n_tokens: int) -> str:
    """``text`` without its first ``n_tokens`` tokens (cut at a token boundary)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if n_tokens >= len(offsets):
        return ""
    return text[offsets[n_tokens][0]:]


def fit_prompt(tokenizer, prompt: Prompt, budget: int, *, render: Callable[[Prompt], str] | None = None,
               as_text: bool = False) -> Fitted:
    """``prompt`` cut, oldest context first, until ``render(prompt)`` is at most ``budget`` tokens.

    ``render`` defaults to the chat template with the assistant turn opened (what generation
    feeds the model). Order of cuts: whole turns from the oldest (keeping system messages and the
    last turn), then the leading text of the remaining turns from the oldest, the system message
    last. A string prompt stays a string when no chat template is involved (or ``as_text``: an
    already rendered prompt, cut from the left as plain text). Raises
    ``FinealignError`` when even an emptied prompt (the template alone) exceeds ``budget``.
    """
    render = render or _generation_render(tokenizer)

    def count(p) -> int:
        return len(tokenizer(render(p), add_special_tokens=False)["input_ids"])

    n0 = n = count(prompt)
    if n <= budget:
        return Fitted(prompt, n, 0)
    from ..data.chat import is_rendered

    if isinstance(prompt, str) and (as_text or not getattr(tokenizer, "chat_template", None)
                                    or is_rendered(prompt, tokenizer)):  # already rendered: cut as text
        text = prompt
        for _ in range(6):  # re-tokenizing at the new edge may shift a token or two
            text = _cut_left(tokenizer, text, n - budget + (_ > 0))
            n = count(text)
            if n <= budget:
                return Fitted(text, n, n0 - n)
        raise FinealignError(f"cannot fit a prompt of {n0} tokens into {budget} tokens")
    msgs = [dict(m) for m in as_messages(prompt)]
    while n > budget:  # 1. whole turns, oldest first (system messages and the last turn stay)
        turns = [i for i, m in enumerate(msgs) if m["role"] != "system"]
        if len(turns) <= 1:
            break
        del msgs[turns[0]]
        n = count(msgs)
    order = [i for i, m in enumerate(msgs) if m["role"] != "system"] + [i for i, m in enumerate(msgs) if m["role"] == "system"]
    for i in order:  # 2. leading text of the remaining turns, oldest first, the system message last
        for attempt in range(6):
            if n <= budget or not msgs[i]["content"]:
                break
            msgs[i]["content"] = _cut_left(tokenizer, msgs[i]["content"], n - budget + attempt)
            n = count(msgs)
    if n > budget:
        raise FinealignError(f"the chat template alone takes {n} tokens; it cannot fit into {budget} tokens")
    return Fitted(msgs, n, n0 - n)
