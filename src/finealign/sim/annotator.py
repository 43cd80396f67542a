"""A simulated annotator: the oracle's minimal edit and gold preferences, with seeded noise.

Noise knobs (probabilities, each drawn independently from the annotator's seeded generator):

* ``p_miss``: each wrong span (and the missing items the oracle would append, as one) is left alone;
* ``p_over_edit``: each word that no gold rule scores is replaced by a neutral word of the task
  (``SimTask.neutral_words``), i.e. a correct span changed although nothing was wrong with it. The
  replacement is kept only if it leaves the gold score unchanged, so over-edits add label noise
  (spurious changed tokens) but never change which response is better;
* ``p_flip``: a pairwise preference is reported the wrong way round.

With all three at 0 the annotator is the oracle: its edit fixes exactly the wrong spans and the
edited response scores the maximum.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import FinealignError
from .base import Instance, Judgement, SimTask, apply_fixes, words


@dataclass(frozen=True)
class Noise:
    """The annotator's error rates (each in [0, 1])."""

    p_miss: float = 0.0
    p_over_edit: float = 0.0
    p_flip: float = 0.0

    def __post_init__(self):
        for k, v in self.__dict__.items():
            if not 0.0 <= float(v) <= 1.0:
                raise FinealignError(f"{k} must lie in [0, 1], got {v}")

    @property
    def zero(self) -> bool:
        return self.p_miss == self.p_over_edit == self.p_flip == 0.0


REALISTIC = Noise(p_miss=0.2, p_over_edit=0.05, p_flip=0.1)
"""A setting in the range reported for people and LLM editors (a fifth of errors missed, one word in
twenty touched needlessly, one preference in ten reversed); a knob, not a measurement."""


class Edit(NamedTuple):
    """One annotated edit: the edited text and what the annotator did."""

    edited: str
    fixed: int  # wrong spans fixed (the appended missing items count as one)
    missed: int  # wrong spans (or the appended items) left alone
    over_edits: int  # correct words changed


def annotate_edit(task: SimTask, inst: Instance, response: str, judgement: Judgement, noise: Noise,
                  rng: random.Random) -> Edit:
    """The annotator's minimal edit of ``response`` (see the module docstring for the noise)."""
    fixes, fixed, missed = [], 0, 0
    for m in judgement.mentions:
        if not m.wrong:
            continue
        if noise.p_miss and rng.random() < noise.p_miss:
            missed += 1
            continue
        fixes.append((m.start, m.end, m.fix or ""))
        fixed += 1
    over = 0
    if noise.p_over_edit:
        scored = [(m.start, m.end) for m in judgement.mentions]
        neutral = task.neutral_words(inst)
        base = task.judge(inst, apply_fixes(response, fixes)).score
        for s, e, word in words(response):
            if any(a < e and s < b for a, b in scored) or rng.random() >= noise.p_over_edit:
                continue
            choices = [x for x in neutral if x.lower() != word.lower()]
            if not choices:
                continue
            rep = rng.choice(choices)
            rep = rep.capitalize() if word[:1].isupper() else rep
            trial = sorted(fixes + [(s, e, rep)])
            if task.judge(inst, apply_fixes(response, trial)).score == base:
                fixes, over = trial, over + 1
    return Edit(apply_fixes(response, fixes), fixed, missed, over)


def preference(score_a: float, score_b: float, noise: Noise, rng: random.Random) -> int | None:
    """0 if the annotator prefers a, 1 if b, None on a gold tie; flipped with probability ``p_flip``."""
    if score_a == score_b:
        return None
    pick = 0 if score_a > score_b else 1
    if noise.p_flip and rng.random() < noise.p_flip:
        pick = 1 - pick
    return pick
