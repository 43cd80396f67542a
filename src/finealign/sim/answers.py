"""Synthetic answers to simulated-task prompts, right and wrong, in each task's styles (pure logic).

``synth_answer(task, instance, rng, error_rate)`` writes one plausible answer to ``instance``:
each *item* of the answer is wrong with probability ``error_rate`` (in [0, 1]), independently:

* ``facts``: each asked subject's answer (a wrong one is another answer of the same relation);
  one sentence in one of several phrasings for one subject, ``Subject: Answer`` lines for several;
* ``constraints``: each required word (left out when wrong: a topic word stands in), the use of a
  banned filler word, and the use of a word with the banned letter; one sentence from several templates;
* ``arithmetic``: each worked step's result and the final answer (off by a small amount or by the
  wrong operation); a bare sentence, ``The answer is N.``, or worked steps ``a + b = r`` then a
  sentence.

So ``error_rate=0`` gives answers the task's gold scorer rates 1.0 (tested on every style) and
higher rates give more wrong spans. These are the supervised fine-tuning data of ``finealign sim
policy`` (``sim.policy``): a policy trained on them starts below the ceiling, and sampling it several
times finds better answers than its mean, which is what RL needs to improve on.
"""

from __future__ import annotations

import random

from ..errors import FinealignError
from .arithmetic import ArithmeticTask
from .base import Instance, SimTask
from .constraints import FILLERS, TOPICS
from .facts import FactsTask

__all__ = ["check_error_rate", "synth_answer", "STYLES"]

FACT_STYLES = {
    "capital": ("The capital of {s} is {a}.", "{a} is the capital of {s}.", "{a}.", "It is {a}."),
    "element": ("{s} is the symbol of {a}.", "The element with the symbol {s} is {a}.", "{a} has the symbol {s}.",
                "{a}."),
}
GENERIC_FACT_STYLES = ("The {relation} of {s} is {a}.", "{a}.")
# constraint sentences: {a} {b} ... the required words in order, {t} the topic; most words avoid the letters a
# prompt may ban (b c f g h k m p u v y), so that a right answer exists for every prompt
CONSTRAINT_TEMPLATES = (
    "I saw a {0} and a {1} near {t}.", "A {0} sat near an old {1}.", "In {t}, a {0} rests next to a {1}.",
    "{0} and {1} are still there at noon.", "One {0}, one {1}, and a lot of {t}.", "A tiny {0} lies on a {1}.",
    "{0}, {1} and {2} are in one sentence.", "The {0} is near the {1}.", "A {0} and a {1} sit in a row.",
)
MORE_WORDS = ("and a {w}", "next to a {w}", "near a {w}")
ARITH_SYMBOL = {"add": "+", "sub": "-"}


def check_error_rate(error_rate: float) -> float:
    """``error_rate`` itself; ``FinealignError`` unless it lies in [0, 1]."""
    if not isinstance(error_rate, (int, float)) or not 0.0 <= float(error_rate) <= 1.0:
        raise FinealignError(f"error rate must lie in [0, 1], got {error_rate}")
    return float(error_rate)


def synth_answer(task: SimTask, instance: Instance, rng: random.Random, error_rate: float) -> str:
    """One synthetic answer to ``instance`` (see the module docstring); ``FinealignError`` for a task without
    a generator or an ``error_rate`` outside [0, 1]."""
    e = check_error_rate(error_rate)
    fn = STYLES.get(task.name)
    if fn is None:
        raise FinealignError(f"no synthetic answers for sim task {task.name!r}; known: {', '.join(STYLES)}")
    return fn(task, instance, rng, e)


# ---------------------------------------------------------------------------------------------- facts


def _facts(task: FactsTask, inst: Instance, rng: random.Random, e: float) -> str:
    rel, subs = inst.fields["relation"], list(inst.fields["subjects"])
    facts = [task._by_subject[rel, s] for s in subs]
    answers = [f.answer for f in task.table[rel]]
    picked = []
    for f in facts:
        a = f.answer
        if rng.random() < e:
            a = rng.choice([x for x in answers if x != f.answer] or [a])
        picked.append(a)
    if len(subs) > 1:
        return "\n".join(f"{s}: {a}" for s, a in zip(subs, picked))
    style = rng.choice(FACT_STYLES.get(rel, tuple(s.replace("{relation}", rel) for s in GENERIC_FACT_STYLES)))
    return style.format(s=subs[0], a=picked[0])


# ---------------------------------------------------------------------------------------------- constraints


def _has(word: str, letter: str | None) -> bool:
    return bool(letter) and letter in word.lower()


def _constraints(task, inst: Instance, rng: random.Random, e: float) -> str:
    f = inst.fields
    letter, banned, topic = f.get("letter"), list(f.get("banned") or []), f["topic"]
    words = [w for w in f["required"] if rng.random() >= e]  # each required word left out with probability e
    others = [w for w in TOPICS[topic] if w not in f["required"]]
    use_letter = bool(letter) and rng.random() < e
    while len(words) < 2:  # keep the sentence's shape: topic words that earn nothing stand in
        pool = [w for w in others if w not in words and (use_letter or not _has(w, letter))] or ["one"]
        words.append(rng.choice(pool))
    rng.shuffle(words)
    candidates = list(CONSTRAINT_TEMPLATES)
    rng.shuffle(candidates)
    text = None
    for tpl in candidates:
        n = tpl.count("{") - tpl.count("{t}")
        if n > len(words):
            continue
        t = tpl.format(*words[:n], t=topic) + "".join(
            " " + rng.choice(MORE_WORDS).format(w=w) for w in words[n:])
        t = t[0].upper() + t[1:]
        if use_letter or not any(_has(w, letter) for w in t.replace(",", " ").replace(".", " ").split()):
            text = t
            break
    if text is None:  # nothing avoids the letter: the bare words
        text = " and ".join(words).capitalize() + "."
    if use_letter and not _has(text, letter):
        pool = [w for ws in TOPICS.values() for w in ws if _has(w, letter)] or [letter * 2]
        text = text[:-1] + f" and a {rng.choice(pool)}."
    if banned and rng.random() < e:  # a banned filler word opens the sentence
        head = text[0] if text.startswith("I ") else text[0].lower()
        text = f"{rng.choice(banned).capitalize()}, {head}{text[1:]}"
    return text


# ---------------------------------------------------------------------------------------------- arithmetic


def _wrong(x: int, rng: random.Random) -> int:
    d = rng.choice((-3, -2, -1, 1, 2, 3, 10, -10))
    return x + d if x + d >= 0 and x + d != x else x + abs(d)


def _arithmetic(task: ArithmeticTask, inst: Instance, rng: random.Random, e: float) -> str:
    f = inst.fields
    name, item, x = f["name"], f["item"], f["a"]
    steps = []
    for kind, k, b in f["ops"]:
        if kind == "mul":
            sym, b = rng.choice(("*", "x")), 2 + k
            r = x * b
        else:
            sym = ARITH_SYMBOL[kind]
            r = x + b if kind == "add" else x - b
        shown = _wrong(r, rng) if rng.random() < e else r
        steps.append(f"{x} {sym} {b} = {shown}")
        x = shown  # a wrong step carries on, as a person's would
    final = x  # right unless a step went wrong
    if rng.random() < e:  # a wrong final answer: never the true result
        final = _wrong(x, rng)
        while final == f["answer"]:
            final = _wrong(final, rng)
    style = rng.randrange(4)
    if style == 0:
        return f"{name} has {final} {item} now."
    if style == 1:
        return f"The answer is {final}."
    worked = ". ".join(steps) if style == 2 else ", then ".join(steps)
    return f"{worked}. So {name} has {final} {item}." if style == 2 else f"{worked}, so the answer is {final}."


STYLES = {"facts": _facts, "constraints": _constraints, "arithmetic": _arithmetic}
