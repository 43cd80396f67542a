"""What every simulated task shares: instances, gold judgements, the oracle minimal edit, the registry.

A simulated task (``facts``, ``constraints``, ``arithmetic``) is pure logic, no model calls:

* ``sample(rng, n)``: ``n`` distinct seeded instances; an ``Instance`` holds the prompt text and
  the fields it was rendered from;
* ``parse(prompt)``: the instance back from its prompt text. A prompt is accepted only when
  re-rendering the parsed fields gives the same text, so a prompt that the task did not generate
  raises ``NotGenerated`` (the gold scorer's guard against scoring foreign data);
* ``judge(instance, response)``: the gold ``Judgement``: the sequence score (at most 1.0) and the
  scored character spans of the response, each with its reward (``+w`` for a correct item, ``-w``
  for a wrong span) and, for a wrong span, the text that fixes it. Items the response lacks cost as
  much as wrong ones (so saying nothing is never better than guessing): they are one zero-width
  mention at the end of the response, ``(len, len)``, whose fix is the text the oracle appends.

Gold token rewards are causal (the contract of every token scorer, docs/token-rewards.md): the reward
that lands on a unit depends on the prompt and the text up to that unit only. So each mention's reward
lands where it is *decided* (``Mention.land``): a word or number when the character after it closes it,
an entity of ``facts`` at the end of the sentence that decides whom it answers, and whatever is judged
on the whole response (the final answer, missing items) and anything the response's last, unfinished
sentence or word decides on the *stop unit*, the zero-width unit ``(len, len)`` that stands for the
end-of-turn token. The sequence score is the sum of the mention rewards, so per-token gold rewards
(``gold_token_rewards`` over ``scored_units``: the word units plus the stop unit) add up to it exactly.
``oracle_edit`` applies every mention's fix (the wrong spans replaced, the missing items inserted); the
edited response then scores the maximum 1.0 (tested for every task).

Character spans are half-open ``[start, end)`` Python string indices, as in ``core.align``.
"""

from __future__ import annotations

import abc
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from ..core.align import spans_to_token_labels, split_units
from ..core.token_map import map_token_rewards
from ..errors import FinealignError

Span = tuple[int, int]
MAX_SCORE = 1.0


class NotGenerated(FinealignError):
    """A prompt that the task's generator did not produce (or a response to such a prompt)."""


@dataclass(frozen=True)
class Instance:
    """One task instance: the task's name, the JSON-safe fields the prompt was rendered from, the prompt."""

    task: str
    fields: dict
    prompt: str


@dataclass(frozen=True)
class Mention:
    """A scored span of a response: ``reward`` > 0 for a correct item, < 0 for a wrong span.

    ``fix``: the text the oracle puts in place of ``[start, end)`` (``""`` deletes it; a zero-width
    span inserts it); None leaves the span alone. ``kind`` names the rule that scored it (``answer``,
    ``violation``, ...). ``land``: the span whose last character's token carries the reward, where
    the reward is decided (``None``: the mention's own span; ``(len, len)``: the stop unit).
    """

    start: int
    end: int
    reward: float
    kind: str
    fix: str | None = None
    land: Span | None = None

    @property
    def reward_span(self) -> Span:
        """Where the reward lands: ``land``, else the mention's own span."""
        return self.land if self.land is not None else (self.start, self.end)

    @property
    def wrong(self) -> bool:
        return self.reward < 0

    @property
    def missing(self) -> bool:
        """The zero-width mention at the end that stands for the items the response lacks."""
        return self.kind == "missing"


@dataclass(frozen=True)
class Judgement:
    """The gold verdict on one response.

    ``score``: the sequence gold score, ``sum(m.reward for m in mentions)``, at most ``MAX_SCORE``.
    ``mentions``: the scored spans, sorted and non-overlapping (the missing items' zero-width
    mention last); ``missing``: how many items the response lacks.
    """

    score: float
    mentions: tuple[Mention, ...] = ()
    missing: int = 0

    @property
    def wrong_spans(self) -> list[Span]:
        """The wrong character spans (non-empty; the missing items have no characters)."""
        return [(m.start, m.end) for m in self.mentions if m.wrong and m.end > m.start]

    @property
    def append(self) -> str:
        """The text the oracle appends for the missing items (``""`` when nothing is missing)."""
        return "".join(m.fix or "" for m in self.mentions if m.missing)

    @property
    def correct_spans(self) -> list[Span]:
        return [(m.start, m.end) for m in self.mentions if not m.wrong]

    @property
    def perfect(self) -> bool:
        return abs(self.score - MAX_SCORE) < 1e-9 and not self.wrong_spans


def make_judgement(mentions: Sequence[Mention], response: str, append: str = "", missing: int = 0,
                   missing_reward: float = 0.0, insert_at: int | None = None) -> Judgement:
    """A ``Judgement`` whose score is the sum of the mentions' rewards (mentions sorted by start).

    ``missing`` items cost ``missing_reward`` (< 0) together, as one zero-width mention whose reward
    lands on the stop unit and whose fix ``append`` is inserted at ``insert_at`` (default: the end).
    """
    ms = sorted(mentions, key=lambda m: (m.start, m.end))
    if missing:
        at = len(response) if insert_at is None else insert_at
        stop = (len(response), len(response))
        ms.append(Mention(at, at, missing_reward, "missing", fix=append, land=stop))
        ms.sort(key=lambda m: (m.start, m.end, m.missing))
    for a, b in zip(ms, ms[1:]):
        if b.start < a.end:
            raise ValueError(f"overlapping scored spans {a.start, a.end} and {b.start, b.end}")
    return Judgement(score=float(sum(m.reward for m in ms)), mentions=tuple(ms), missing=missing)


# ---------------------------------------------------------------------------------------------- edits


def apply_fixes(text: str, fixes: Sequence[tuple[int, int, str]], append: str = "") -> str:
    """``text`` with each ``[start, end)`` replaced by its string (non-overlapping), then ``append``."""
    out, pos = [], 0
    for s, e, rep in sorted(fixes):
        if s < pos:
            raise ValueError(f"overlapping fixes at {s}")
        out.append(text[pos:s])
        out.append(rep)
        pos = e
    out.append(text[pos:])
    return "".join(out) + append


def oracle_edit(response: str, judgement: Judgement) -> str:
    """The minimal edit: every mention's fix applied (wrong spans replaced, missing items inserted)."""
    return apply_fixes(response, [(m.start, m.end, m.fix) for m in judgement.mentions if m.fix is not None])


# ---------------------------------------------------------------------------------------------- gold per token


def gold_token_rewards(judgement: Judgement, offsets: Sequence[Span]) -> list[float]:
    """Gold reward of each token (T,) given the tokens' character ``offsets`` in the response.

    Each mention's reward lands on the token holding the last character of its ``reward_span``; a
    reward on the stop unit ``(len, len)`` lands on a zero-width token at ``len`` when ``offsets`` has
    one (``scored_units`` adds it; a policy's stop token decodes to it), else on the last token. The
    rewards sum to ``judgement.score`` whenever T > 0.
    """
    return map_token_rewards([m.reward_span for m in judgement.mentions],
                             [m.reward for m in judgement.mentions], list(offsets))


def gold_token_labels(judgement: Judgement, offsets: Sequence[Span], response: str) -> list[int]:
    """1 for each token (T,) that overlaps a wrong span (``core.align.spans_to_token_labels``), else 0."""
    return spans_to_token_labels(offsets, judgement.wrong_spans, text=response)


def unit_offsets(response: str) -> list[Span]:
    """The non-whitespace word units of ``response`` (``core.align.split_units``): the gold scorer's 'tokens'."""
    return [(u.start, u.end) for u in split_units(response) if not u.text.isspace()]


def scored_units(response: str) -> list[Span]:
    """``unit_offsets`` plus the stop unit ``(len, len)``: the units the gold token scorer rewards."""
    return unit_offsets(response) + [(len(response), len(response))]


def closed(text: str, end: int) -> bool:
    """Whether a word or number ending at ``end`` is finished: a character follows that cannot continue it
    (not a letter, digit, or a ``.``/``,`` followed by a digit). At the end of the text it is not: the
    next token may still extend it, so what it decides goes on the stop unit."""
    if end >= len(text):
        return False
    c = text[end]
    if c.isalnum() or c == "_":
        return False
    return not (c in ".," and end + 1 < len(text) and text[end + 1].isdigit())


def land_word(text: str, start: int, end: int) -> Span | None:
    """``Mention.land`` of a word judged on its own: its own span when ``closed``, else the stop unit."""
    return None if closed(text, end) else (len(text), len(text))


# ---------------------------------------------------------------------------------------------- text helpers

WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def words(text: str) -> list[tuple[int, int, str]]:
    """Word spans ``(start, end, word)``: runs of letters/digits (an inner apostrophe kept)."""
    return [(m.start(), m.end(), m.group()) for m in WORD_RE.finditer(text)]


def segments(text: str) -> list[Span]:
    """Sentence/line segments: cut at newlines and after ``.``, ``!``, ``?`` followed by whitespace."""
    out, start = [], 0
    for m in re.finditer(r"\n|(?<=[.!?])\s", text):
        out.append((start, m.start()))
        start = m.end()
    out.append((start, len(text)))
    return out


def segment_lands(text: str, segs: Sequence[Span]) -> list[Span]:
    """``Mention.land`` of what each segment of ``segments(text)`` decides: a closed segment (one that a
    separator follows) lands on its last non-whitespace character; the last segment, which the next
    token may still continue, on the stop unit ``(len, len)``."""
    stop = (len(text), len(text))
    out = []
    for k, (a, b) in enumerate(segs):
        end = b
        while end > a and text[end - 1].isspace():
            end -= 1
        out.append(stop if k == len(segs) - 1 or end == a else (end - 1, end))
    return out


_TEMPLATED_USER = (  # the last user turn of a prompt string that already carries a chat template
    re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL),  # ChatML (SmolLM2, Qwen)
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.DOTALL),  # Llama 3
    re.compile(r"\[INST\]\s*(.*?)\s*\[/INST\]", re.DOTALL),  # Llama 2 / Mistral
)


def user_text(prompt) -> str:
    """The text a task parses: a string prompt (the last user turn when it already carries a ChatML, Llama-3 or
    [INST] chat template, as RL engines send it), or the content of the last user message."""
    if isinstance(prompt, str):
        for pat in _TEMPLATED_USER:
            turns = pat.findall(prompt)
            if turns:
                return turns[-1]
        return prompt
    if isinstance(prompt, list):
        for m in reversed(prompt):
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return m["content"]
    raise NotGenerated("prompt has no user message")


def short(text: str, n: int = 70) -> str:
    t = text.replace("\n", " ")
    return repr(t if len(t) <= n else t[: n - 3] + "...")


# ---------------------------------------------------------------------------------------------- tasks


@dataclass
class TaskOptions:
    """Base of a task's difficulty knobs (each task subclasses it)."""

    def describe(self) -> dict:
        return dict(self.__dict__)


class SimTask(abc.ABC):
    """A simulated task with a gold reward; see the module docstring."""

    name: str = "task"

    @abc.abstractmethod
    def sample(self, rng: random.Random, n: int) -> list[Instance]:
        """``n`` distinct instances; raises ``FinealignError`` when fewer than ``n`` distinct ones exist."""

    @abc.abstractmethod
    def parse(self, prompt: str) -> Instance:
        """The instance whose prompt is ``prompt``; raises ``NotGenerated`` otherwise."""

    @abc.abstractmethod
    def judge(self, instance: Instance, response: str) -> Judgement:
        """The gold judgement of ``response`` to ``instance``."""

    def neutral_words(self, instance: Instance) -> list[str]:
        """Words an over-editing annotator may put in place of a correct word (score unchanged)."""
        return ["also", "then", "now", "so", "thus", "still"]

    def judge_prompt(self, prompt, response: str) -> Judgement:
        """``judge(parse(prompt), response)``; ``prompt`` may be a message list (last user turn)."""
        try:
            inst = self.parse(user_text(prompt))
        except NotGenerated as e:
            raise NotGenerated(f"sim task {self.name}: prompt {short(user_text_safe(prompt))} was not generated by "
                               f"this task ({e})") from None
        return self.judge(inst, response)


def user_text_safe(prompt) -> str:
    try:
        return user_text(prompt)
    except NotGenerated:
        return str(prompt)


def distinct_sample(make_one, rng: random.Random, n: int, capacity: int | None, what: str) -> list[Instance]:
    """``n`` distinct instances from ``make_one(rng)``; an error when ``n`` exceeds the pool of distinct prompts."""
    if capacity is not None and n > capacity:
        raise FinealignError(f"asked for {n} {what} prompts, but only {capacity} distinct ones exist with these "
                             f"settings; lower --n/--heldout or raise the task's difficulty knobs")
    seen: dict[str, Instance] = {}
    tries = 0
    while len(seen) < n:
        inst = make_one(rng)
        seen.setdefault(inst.prompt, inst)
        tries += 1
        if tries > 50 * n + 1000:
            raise FinealignError(f"could only draw {len(seen)} distinct {what} prompts of the {n} asked for; "
                                 "lower --n/--heldout")
    return list(seen.values())


@dataclass(frozen=True)
class Template:
    """A format string whose fields parse back: ``Template("Use {w} now.", {"w": r"\\w+"})``."""

    fmt: str
    patterns: dict = field(default_factory=dict)

    def regex(self) -> re.Pattern:
        parts, pos = [], 0
        for m in re.finditer(r"\{(\w+)\}", self.fmt):
            parts.append(re.escape(self.fmt[pos:m.start()]))
            name = m.group(1)
            parts.append(f"(?P<{name}>{self.patterns.get(name, '.+?')})")
            pos = m.end()
        parts.append(re.escape(self.fmt[pos:]))
        return re.compile("".join(parts), re.DOTALL)

    def match(self, text: str) -> dict | None:
        m = self.regex().fullmatch(text)
        return m.groupdict() if m else None

    def render(self, **kw) -> str:
        return self.fmt.format(**kw)
