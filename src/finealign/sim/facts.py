"""The ``facts`` task: questions over a table of public facts; wrong entities are the wrong spans.

A prompt asks for the answer of ``slots`` subjects (default 1) under one relation of the table (bundled:
``capital`` of a country, ``element`` named by a chemical symbol; ``resources/sim/facts.csv``).

Gold scorer (each asked subject is worth ``w = 1 / slots``):

1. Mentions: every answer of the relation (any accepted spelling) and every asked subject found in
   the response as a whole word (names of at most 3 characters, such as symbols, case-sensitively;
   longer ones case-insensitively; the longest name wins where two overlap).
2. Association: an answer mention belongs to the nearest asked-subject mention in the same
   sentence or line; distance counts the characters between them that belong to no other mention,
   so replacing or deleting another answer never changes it (ties go to the subject before it). An
   answer with no subject in its sentence is unassociated.
3. Credit, sentence by sentence in text order: an associated answer is correct when it is its
   subject's answer (``+w`` for the first such mention of each subject; repeats score 0) and wrong
   otherwise (``-w``). Then, in text order, an unassociated answer of the sentence that is the answer
   of a subject not yet credited is correct (``+w``); one that repeats a credited answer scores 0; any
   other is wrong (``-w``). Each reward lands on the last character of its sentence, where the
   association is decided (on the stop token for the last, unfinished sentence), so the rewards are
   causal.
4. Oracle fixes: an associated wrong answer becomes its subject's answer; unassociated wrong answers
   become the answers of the still-missing subjects in the order asked (deleted once none is left);
   subjects still missing cost ``w`` each (on the stop token, like a wrong answer, so that saying
   nothing is never better than guessing) and get a sentence appended, e.g.
   ``\\nThe capital of Peru is Lima.``

Score = sum of the rewards; 1.0 exactly when every asked subject is answered right and nothing wrong
is said. Known limit: only names in the table are seen; a misspelled or invented answer is missing,
not wrong.
"""

from __future__ import annotations

import csv
import io
import random
import re
from dataclasses import dataclass
from importlib import resources
from math import comb
from pathlib import Path

from ..errors import DataError, FinealignError
from .base import Instance, Judgement, Mention, NotGenerated, SimTask, TaskOptions, Template, distinct_sample, \
    make_judgement, segment_lands, segments

COLUMNS = ("relation", "subject", "answer")

# relation -> (one-subject question, several-subjects question, sentence the oracle appends)
PHRASES = {
    "capital": ("What is the capital of {subject}? Answer in one sentence.",
                "What are the capitals of these countries?\n{lines}\nAnswer with one line per country, "
                "as 'Country: Capital'.",
                "The capital of {subject} is {answer}."),
    "element": ("Which chemical element has the symbol {subject}? Answer in one sentence.",
                "Which chemical elements have these symbols?\n{lines}\nAnswer with one line per symbol, "
                "as 'Symbol: Element'.",
                "{subject} is the symbol of {answer}."),
}
GENERIC = ("What is the {relation} of {subject}? Answer in one sentence.",
           "What is the {relation} of each of these?\n{lines}\nAnswer with one line per item, as 'Item: {relation}'.",
           "The {relation} of {subject} is {answer}.")


@dataclass(frozen=True)
class Fact:
    """One row: ``subjects`` / ``answers`` are the accepted spellings, the first one canonical."""

    relation: str
    subjects: tuple[str, ...]
    answers: tuple[str, ...]

    @property
    def subject(self) -> str:
        return self.subjects[0]

    @property
    def answer(self) -> str:
        return self.answers[0]


def bundled_table() -> Path:
    return Path(str(resources.files("finealign.resources") / "sim" / "facts.csv"))


def load_facts(path: str | Path | None = None) -> dict[str, list[Fact]]:
    """The fact table (``relation,subject,answer`` CSV; ``|`` separates accepted spellings) by relation.

    Raises ``DataError`` for a missing column, an empty cell, a subject listed twice in one relation,
    or a name that is both a subject and an answer of one relation.
    """
    path = Path(path) if path is not None else bundled_table()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(path, None, None, f"cannot read the fact table: {e.strerror or e}") from None
    reader = csv.DictReader(io.StringIO(text))
    have = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in have]
    if missing:
        raise DataError(path, 1, None, f"fact table lacks column(s) {', '.join(missing)} "
                                       f"(needs {', '.join(COLUMNS)}; has {', '.join(have) or 'none'})")
    out: dict[str, list[Fact]] = {}
    seen: dict[tuple[str, str], int] = {}
    for line, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        for c in COLUMNS:
            if not row.get(c):
                raise DataError(path, line, c, "empty")
        subs = tuple(s.strip() for s in row["subject"].split("|") if s.strip())
        ans = tuple(a.strip() for a in row["answer"].split("|") if a.strip())
        rel = row["relation"]
        for s in subs:
            if (rel, s.lower()) in seen:
                raise DataError(path, line, "subject", f"{s!r} is listed twice for relation {rel!r} "
                                                       f"(first at line {seen[rel, s.lower()]})")
            seen[rel, s.lower()] = line
        out.setdefault(rel, []).append(Fact(rel, subs, ans))
    if not out:
        raise DataError(path, None, None, "fact table has no rows")
    for rel, facts in out.items():
        subj = {s.lower() for f in facts for s in f.subjects}
        for f in facts:
            both = [a for a in f.answers if a.lower() in subj]
            if both:
                raise DataError(path, None, "answer",
                                f"{both[0]!r} is both a subject and an answer of relation {rel!r}")
    return out


@dataclass
class FactsOptions(TaskOptions):
    """``slots``: subjects asked per prompt (difficulty); ``relations``: which relations to ask (default all).

    Default 1 slot: the default 135M policy answers 43% of one-subject questions right (mean gold -0.15,
    best of 4 samples 0.30) but 2.5% of two-subject ones (mean -0.94; docs/sim.md).
    """

    slots: int = 1
    relations: tuple[str, ...] = ()
    table: str | None = None


def _phrases(relation: str) -> tuple[str, str, str]:
    if relation in PHRASES:
        return PHRASES[relation]
    return tuple(p.replace("{relation}", relation) for p in GENERIC)  # type: ignore[return-value]


class _Matcher:
    """Whole-word matcher for a set of names (short names case-sensitively); longest match wins."""

    def __init__(self, names: dict[str, object]):
        self.names = names
        self.lower = {n.lower(): v for n, v in names.items() if len(n) > 3}
        exact = sorted((n for n in names if len(n) <= 3), key=len, reverse=True)
        loose = sorted((n for n in names if len(n) > 3), key=len, reverse=True)
        alt = lambda ns: "|".join(re.escape(n) for n in ns)  # noqa: E731
        self.exact = re.compile(rf"(?<!\w)(?:{alt(exact)})(?!\w)") if exact else None
        self.loose = re.compile(rf"(?<!\w)(?:{alt(loose)})(?!\w)", re.IGNORECASE) if loose else None

    def find(self, text: str) -> list[tuple[int, int, object]]:
        hits = []
        if self.exact is not None:
            hits += [(m.start(), m.end(), self.names[m.group()]) for m in self.exact.finditer(text)]
        if self.loose is not None:
            hits += [(m.start(), m.end(), self.lower[m.group().lower()]) for m in self.loose.finditer(text)]
        return hits


def _non_overlapping(hits):
    out, end = [], -1
    for h in sorted(hits, key=lambda h: (h[0], -(h[1] - h[0]))):
        if h[0] >= end:
            out.append(h)
            end = h[1]
    return out


class FactsTask(SimTask):
    name = "facts"

    def __init__(self, options: FactsOptions | None = None):
        self.options = options or FactsOptions()
        if self.options.slots < 1:
            raise FinealignError(f"facts task: slots must be >= 1, got {self.options.slots}")
        self.table = load_facts(self.options.table)
        rels = tuple(self.options.relations) or tuple(self.table)
        unknown = [r for r in rels if r not in self.table]
        if unknown:
            raise FinealignError(f"facts task: relation(s) {', '.join(unknown)} not in the fact table "
                                 f"(has {', '.join(self.table)})")
        self.relations = rels
        for r in rels:
            if len(self.table[r]) < self.options.slots:
                raise FinealignError(f"facts task: relation {r!r} has {len(self.table[r])} facts, fewer than "
                                     f"slots={self.options.slots}")
        self._by_subject = {(f.relation, f.subject): f for fs in self.table.values() for f in fs}

    # ------------------------------------------------------------------ prompts

    def render(self, relation: str, subjects: list[str]) -> str:
        one, many, _ = _phrases(relation)
        if len(subjects) == 1:
            return one.format(subject=subjects[0])
        return many.format(lines="\n".join(f"- {s}" for s in subjects))

    def _make(self, rng: random.Random) -> Instance:
        rel = rng.choice(self.relations)
        subs = [f.subject for f in rng.sample(self.table[rel], self.options.slots)]
        return Instance(self.name, {"relation": rel, "subjects": subs}, self.render(rel, subs))

    def sample(self, rng: random.Random, n: int) -> list[Instance]:
        cap = sum(comb(len(self.table[r]), self.options.slots) for r in self.relations)
        return distinct_sample(self._make, rng, n, cap, "facts")

    def parse(self, prompt: str) -> Instance:
        for rel in self.table:
            one, many, _ = _phrases(rel)
            got = Template(one, {"subject": r"[^\n]+?"}).match(prompt)
            subs = [got["subject"]] if got else None
            if subs is None:
                got = Template(many, {"lines": r"(?:- [^\n]+\n?)+?"}).match(prompt)
                subs = [ln[2:] for ln in got["lines"].split("\n")] if got else None
            if subs is None:
                continue
            if not all((rel, s) in self._by_subject for s in subs) or len(set(subs)) != len(subs):
                continue
            if self.render(rel, subs) == prompt:
                return Instance(self.name, {"relation": rel, "subjects": subs}, prompt)
        raise NotGenerated("not a facts question over this fact table")

    # ------------------------------------------------------------------ gold

    def judge(self, instance: Instance, response: str) -> Judgement:
        rel, subs = instance.fields["relation"], list(instance.fields["subjects"])
        facts = [self._by_subject[rel, s] for s in subs]
        w = 1.0 / len(subs)
        answer_of = {}  # spelling -> canonical answer
        for f in self.table[rel]:
            for a in f.answers:
                answer_of[a] = f.answer
        key_of = {s: i for i, f in enumerate(facts) for s in f.subjects}
        names = {**{a: ("answer", c) for a, c in answer_of.items()}, **{s: ("subject", i) for s, i in key_of.items()}}
        hits = _non_overlapping(_Matcher(names).find(response))
        ents = [(s, e) for s, e, _ in hits]
        values = [(s, e, v[1]) for s, e, v in hits if v[0] == "answer"]
        keys = [(s, e, v[1]) for s, e, v in hits if v[0] == "subject"]
        segs = segments(response)

        def seg_of(pos: int) -> int:
            return next(i for i, (a, b) in enumerate(segs) if a <= pos <= b)

        def gap(a: int, b: int) -> int:  # characters in [a, b) outside every mention
            return (b - a) - sum(max(0, min(e, b) - max(s, a)) for s, e in ents)

        def owner(vs: int, ve: int) -> int | None:
            best = None
            for ks, ke, i in keys:
                if seg_of(ks) != seg_of(vs):
                    continue
                d = (gap(ke, vs), 0) if ke <= vs else (gap(ve, ks), 1)
                if best is None or d < best[0]:
                    best = (d, i)
            return None if best is None else best[1]

        gold = [f.answer for f in facts]
        lands = segment_lands(response, segs)
        credited: set[int] = set()
        covered: set[int] = set()
        mentions: list[Mention] = []
        wrong_loose = []
        for k in range(len(segs)):  # sentence by sentence: what a sentence decides lands where it ends
            land = lands[k]
            loose = []
            for s, e, canon in (v for v in values if seg_of(v[0]) == k):
                i = owner(s, e)
                if i is None:
                    loose.append((s, e, canon))
                elif canon == gold[i]:
                    if i not in credited:
                        credited.add(i)
                        mentions.append(Mention(s, e, w, "answer", land=land))
                else:
                    covered.add(i)
                    mentions.append(Mention(s, e, -w, "answer", fix=gold[i], land=land))
            for s, e, canon in loose:
                i = next((j for j, g in enumerate(gold) if g == canon), None)
                if i is not None and i not in credited:
                    credited.add(i)
                    mentions.append(Mention(s, e, w, "answer", land=land))
                elif i is None:
                    wrong_loose.append((s, e, land))
        todo = [i for i in range(len(subs)) if i not in credited and i not in covered]
        for s, e, land in wrong_loose:
            fix = gold[todo.pop(0)] if todo else ""
            mentions.append(Mention(s, e, -w, "answer", fix=fix, land=land))
        sentence = _phrases(rel)[2]
        append = "".join("\n" + sentence.format(subject=subs[i], answer=gold[i]) for i in todo)
        return make_judgement(mentions, response, append, len(todo), -w * len(todo))
