"""The ``arithmetic`` task: short word problems whose numbers are checked.

Prompt: ``Anna has 7 stickers. She buys 5 more. She gives away 3. How many stickers does Anna have
now? Answer in one sentence.`` (``steps`` operations: add, subtract, double or triple).

Gold scorer, over the numbers of the response (digits, or the words zero to twenty):

* every worked step written as ``a op b [op c ...] = r`` (``+ - * / x ×``, usual precedence) whose
  ``r`` is not the value of its left side is a wrong span (``-0.5``), judged when ``r`` is written
  (on ``r`` once a character closes it); the oracle writes the value. A step whose value is negative
  is not judged;
* the final answer is the last number of the response, judged on the whole response, so its
  reward lands on the stop token: ``+1`` when it equals the true result, else ``-1`` and the oracle
  replaces it by the result (when it is a step's result, the oracle fixes the step and, if the step's
  value is not the answer, appends ``\\nThe answer is N.``);
* a response with no number at all scores ``-1`` (on the stop token) like a wrong answer, and gets
  ``\\nThe answer is N.`` appended by the oracle.

An earlier number's reward never depends on later text (causal rewards): a number is judged when it is
written, the final answer at the stop.

Score = sum of the rewards; 1.0 exactly when the final answer is right and no worked step is wrong.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction

from ..errors import FinealignError
from .base import Instance, Judgement, Mention, NotGenerated, SimTask, TaskOptions, Template, distinct_sample, \
    land_word, make_judgement

NAMES = {"Tom": "He", "Anna": "She", "Ben": "He", "Maria": "She", "Sam": "He", "Lucy": "She", "Omar": "He",
         "Nina": "She", "Leo": "He", "Emma": "She", "Raj": "He", "Sofia": "She"}
ITEMS = ("apples", "pencils", "marbles", "stickers", "books", "cookies", "coins", "stamps", "cards", "shells")
OPS = {  # kind -> phrasings; {P} pronoun, {o} object pronoun, {b} the operand, {item}
    "add": ("{P} buys {b} more.", "{P} finds {b} more.", "A friend gives {o} {b} more."),
    "sub": ("{P} gives away {b}.", "{P} loses {b}.", "{P} sells {b}."),
    "mul": ("Then the number of {item} doubles.", "Then the number of {item} triples."),
}
START = "{name} has {a} {item}."
QUESTION = "How many {item} does {name} have now? Answer in one sentence."
WORD_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
NUM = r"\d+(?:\.\d+)?"
NUM_RE = re.compile(rf"(?<![\w.]){NUM}(?!\w)|(?<!\w)(?:{'|'.join(WORD_NUMBERS)})(?!\w)", re.IGNORECASE)
EQ_RE = re.compile(rf"(?<![\w.])({NUM}(?:\s*[-+*/×x]\s*{NUM})+)\s*=\s*({NUM})(?!\w)")
EQ_END_RE = re.compile(rf"(?<![\w.]){NUM}(?:\s*[-+*/×x]\s*{NUM})+\s*=\s*{NUM}$")  # a step whose result ends the text
FINAL_REWARD, STEP_PENALTY = 1.0, 0.5


@dataclass
class ArithmeticOptions(TaskOptions):
    """``steps``: operations per problem (difficulty); ``max_start``: largest starting amount.

    Default 1 step: the default 135M policy answers 23% of one-step problems right (mean gold -0.55,
    best of 4 samples 0.07; docs/sim.md); two steps leave it almost no right answer to learn from.
    """

    steps: int = 1
    max_start: int = 20


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):.2f}".rstrip("0").rstrip(".")


def evaluate(expr: str) -> Fraction | None:
    """The value of ``a op b op c ...`` with * / before + - (``x`` and ``×`` are times); None on division by 0."""
    toks = re.findall(rf"{NUM}|[-+*/×x]", expr)
    terms: list[Fraction] = [Fraction(toks[0])]
    signs: list[int] = [1]
    for op, val in zip(toks[1::2], toks[2::2]):
        v = Fraction(val)
        if op in "+-":
            terms.append(v)
            signs.append(1 if op == "+" else -1)
        elif op == "/":
            if v == 0:
                return None
            terms[-1] /= v
        else:
            terms[-1] *= v
    return sum((s * t for s, t in zip(signs, terms)), Fraction(0))


def _value(text: str) -> Fraction:
    low = text.lower()
    return Fraction(WORD_NUMBERS[low]) if low in WORD_NUMBERS else Fraction(text)


def _same(a: Fraction, b: Fraction) -> bool:
    return a == b or round(float(a), 2) == round(float(b), 2)


class ArithmeticTask(SimTask):
    name = "arithmetic"

    def __init__(self, options: ArithmeticOptions | None = None):
        self.options = o = options or ArithmeticOptions()
        if not 1 <= o.steps <= 4:
            raise FinealignError(f"arithmetic task: steps must be 1..4, got {o.steps}")
        if not 2 <= o.max_start <= 100:
            raise FinealignError(f"arithmetic task: max_start must be 2..100, got {o.max_start}")

    # ------------------------------------------------------------------ prompts

    @staticmethod
    def render(name: str, item: str, a: int, ops: list) -> str:
        P = NAMES[name]
        o = "him" if P == "He" else "her"
        parts = [START.format(name=name, a=a, item=item)]
        for kind, k, b in ops:
            parts.append(OPS[kind][k].format(P=P, o=o, b=b, item=item))
        parts.append(QUESTION.format(item=item, name=name))
        return " ".join(parts)

    @staticmethod
    def result(a: int, ops: list) -> int:
        x = a
        for kind, k, b in ops:
            x = x + b if kind == "add" else x - b if kind == "sub" else x * (2 + k)
        return x

    def _make(self, rng: random.Random) -> Instance:
        name, item = rng.choice(sorted(NAMES)), rng.choice(ITEMS)
        a = rng.randint(2, self.options.max_start)
        x, ops = a, []
        for _ in range(self.options.steps):
            kinds = ["add"] + (["sub"] if x > 1 else []) + (["mul"] if x * 3 < 1000 and not any(
                op[0] == "mul" for op in ops) else [])
            kind = rng.choice(kinds)
            k = rng.randrange(len(OPS[kind]))
            b = rng.randint(1, 12) if kind == "add" else rng.randint(1, x - 1) if kind == "sub" else 2 + k
            ops.append([kind, k, b])
            x = self.result(a, ops)
        f = {"name": name, "item": item, "a": a, "ops": ops, "answer": x}
        return Instance(self.name, f, self.render(name, item, a, ops))

    def sample(self, rng: random.Random, n: int) -> list[Instance]:
        return distinct_sample(self._make, rng, n, None, "arithmetic")

    def parse(self, prompt: str) -> Instance:
        sentences = re.split(r"(?<=[.?]) ", prompt)
        if len(sentences) < 4:
            raise NotGenerated("not an arithmetic problem")
        start = Template(START, {"name": "[A-Z][a-z]+", "a": r"\d+", "item": "[a-z]+"}).match(sentences[0])
        if not start or start["name"] not in NAMES or start["item"] not in ITEMS:
            raise NotGenerated("not an arithmetic problem")
        name, item, a = start["name"], start["item"], int(start["a"])
        ops = []
        for s in sentences[1:-2]:
            for kind, phrasings in OPS.items():
                hit = next(((k, m) for k, ph in enumerate(phrasings)
                            if (m := Template(ph, {"P": "He|She", "o": "him|her", "b": r"\d+", "item": "[a-z]+"})
                                .match(s)) is not None), None)
                if hit:
                    k, m = hit
                    ops.append([kind, k, int(m["b"]) if "b" in m else 2 + k])
                    break
            else:
                raise NotGenerated("not an arithmetic problem")
        f = {"name": name, "item": item, "a": a, "ops": ops, "answer": self.result(a, ops)}
        if self.render(name, item, a, ops) != prompt:
            raise NotGenerated("not an arithmetic problem")
        return Instance(self.name, f, prompt)

    # ------------------------------------------------------------------ gold

    def judge(self, instance: Instance, response: str) -> Judgement:
        gold = Fraction(instance.fields["answer"])
        stop = (len(response), len(response))
        nums = [(m.start(), m.end(), _value(m.group())) for m in NUM_RE.finditer(response)]
        if not nums:
            return make_judgement([], response, f"\nThe answer is {_fmt(gold)}.", 1, -FINAL_REWARD)
        mentions, fixed = [], {}
        for m in EQ_RE.finditer(response):  # each worked step, judged once its result is written
            rs, re_ = m.span(2)
            val = evaluate(m.group(1))
            if val is None or val < 0 or _same(Fraction(m.group(2)), val):
                continue
            mentions.append(Mention(rs, re_, -STEP_PENALTY, "equation", fix=_fmt(val), land=land_word(response, rs, re_)))
            fixed[(rs, re_)] = val
        fs, fe, fv = nums[-1]  # the final answer, judged on the whole response: at the stop token
        right = _same(fv, gold)
        reward = FINAL_REWARD if right else -FINAL_REWARD
        if (fs, fe) not in fixed and not EQ_END_RE.search(response[:fe]):
            mentions.append(Mention(fs, fe, reward, "answer", fix=None if right else _fmt(gold), land=stop))
        else:  # the last number is a step's result: fixing it in place would break the step; restate the answer
            after = fixed.get((fs, fe), fv)
            restate = None if _same(after, gold) else f"\nThe answer is {_fmt(gold)}."
            mentions.append(Mention(len(response), len(response), reward, "answer", fix=restate, land=stop))
        return make_judgement(mentions, response)

    def neutral_words(self, instance: Instance) -> list[str]:
        return ["also", "then", "now", "so", "thus", "still"]
