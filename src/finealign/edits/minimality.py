"""The minimality guard: is an edit a real, small change of the original?

An edit violates minimality when

* it changes nothing (``unchanged``): the texts are equal up to whitespace and Unicode normal form
  (NFC: ``"café"`` with a combining accent is the same word), or the word diff of
  the token alignment (``core.align.diff_char_spans``) finds no changed span, so the edit would
  give no token labels at all; or
* it changes too much (``too_large``): its edit ratio is above ``max_ratio`` (default 0.5).

The edit ratio is ``core.align.edit_ratio(original, edited, include_inserted=True)``: the words
of the original replaced or deleted, plus the words inserted, divided by the original's word
count. Counting insertions keeps an editor that appends a paragraph of its own from passing as
minimal. Example: "the cat sat on the mat" -> "the dog sat on the red mat": 1 replaced + 1
inserted over 6 words = 0.333.

``on_violation="flag"`` keeps violating edits with ``meta["minimality"]`` naming the violation;
``"drop"`` removes them (the edit job writes them to a side file instead). Either way the counts
are reported as ``MinimalityStats``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from ..core.align import diff_char_spans, edit_ratio, nfc

__all__ = ["MinimalityConfig", "MinimalityStats", "Verdict", "check_edit", "guard", "OK", "UNCHANGED", "TOO_LARGE"]

OK, UNCHANGED, TOO_LARGE = "ok", "unchanged", "too_large"
ON_VIOLATION = ("flag", "drop")


@dataclass(frozen=True)
class MinimalityConfig:
    """``max_ratio``: largest allowed edit ratio (> 0); ``on_violation``: ``flag`` or ``drop``."""

    max_ratio: float = 0.5
    on_violation: str = "flag"

    def __post_init__(self):
        if not self.max_ratio > 0:
            raise ValueError(f"max_ratio must be > 0, got {self.max_ratio}")
        if self.on_violation not in ON_VIOLATION:
            raise ValueError(f"on_violation must be one of {', '.join(ON_VIOLATION)}, got {self.on_violation!r}")


class Verdict(NamedTuple):
    status: str  # OK | UNCHANGED | TOO_LARGE
    ratio: float  # edit ratio with insertions counted (0.0 when unchanged)

    @property
    def ok(self) -> bool:
        return self.status == OK


def check_edit(original: str, edited: str, max_ratio: float = 0.5) -> Verdict:
    """The guard's verdict on one edit (see the module docstring)."""
    if nfc(original).split() == nfc(edited).split():  # identical up to whitespace and Unicode normal form
        return Verdict(UNCHANGED, 0.0)
    spans_o, spans_e = diff_char_spans(original, edited)
    if not spans_o and not spans_e:
        return Verdict(UNCHANGED, 0.0)
    ratio = edit_ratio(original, edited, include_inserted=True)
    return Verdict(TOO_LARGE if ratio > max_ratio else OK, ratio)


@dataclass(frozen=True)
class MinimalityStats:
    """Counts of verdicts; ratio mean and median over the edits that changed something."""

    total: int = 0
    ok: int = 0
    unchanged: int = 0
    too_large: int = 0
    ratio_mean: float | None = None
    ratio_median: float | None = None
    max_ratio: float = 0.5
    ratios: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_verdicts(cls, verdicts: Iterable[Verdict], max_ratio: float = 0.5) -> "MinimalityStats":
        vs = list(verdicts)
        changed = [v.ratio for v in vs if v.status != UNCHANGED]
        return cls(total=len(vs), ok=sum(v.status == OK for v in vs),
                   unchanged=sum(v.status == UNCHANGED for v in vs),
                   too_large=sum(v.status == TOO_LARGE for v in vs),
                   ratio_mean=statistics.fmean(changed) if changed else None,
                   ratio_median=statistics.median(changed) if changed else None,
                   max_ratio=max_ratio, ratios=tuple(changed))

    @property
    def violations(self) -> int:
        return self.unchanged + self.too_large

    def to_dict(self) -> dict:
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        return {"total": self.total, "ok": self.ok, "unchanged": self.unchanged, "too_large": self.too_large,
                "max_ratio": self.max_ratio, "ratio_mean": r(self.ratio_mean), "ratio_median": r(self.ratio_median)}


def guard(pairs: Iterable[tuple[str, str]], config: MinimalityConfig = MinimalityConfig()
          ) -> tuple[list[int], list[Verdict], MinimalityStats]:
    """Check ``(original, edited)`` pairs: ``(indices kept, verdict per pair, stats)``.

    Under ``flag`` every index is kept; under ``drop`` only those whose verdict is ``ok``.
    """
    verdicts = [check_edit(o, e, config.max_ratio) for o, e in pairs]
    keep = [i for i, v in enumerate(verdicts) if config.on_violation == "flag" or v.ok]
    return keep, verdicts, MinimalityStats.from_verdicts(verdicts, config.max_ratio)
