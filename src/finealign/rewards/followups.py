"""Follow-up utterance sets for the FLR reward.

A follow-up set maps each *dimension* (an aspect of helpfulness) to positive and negative user
follow-ups, the shape of the FLR paper's lists::

    {"relevance": {"positive": ["That answers my question perfectly.", ...],
                   "negative": ["That's not what I asked.", ...]},
     ...}

The default set is the paper's 6 dimensions x (10 positive + 10 negative), shipped as package
data (``finealign/resources/flr_followups``, MIT, see its NOTICE). Any JSON or YAML file of the
same shape works; ``dims`` keeps a subset of the dimensions. A malformed file raises ``DataError``
naming the file and the field (``followups.yaml: relevance.negative[2]: expected a non-empty string``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from ..errors import DataError

POLARITIES = ("positive", "negative")
DEFAULT_DIMS = ("understanding", "relevance", "correctness", "engagingness", "informativeness", "following")


class Followup(NamedTuple):
    """One follow-up utterance: its dimension, polarity and text."""

    dim: str
    positive: bool
    text: str


@dataclass(frozen=True)
class FollowupSet:
    """An ordered set of follow-ups; ``dims`` in file order, ``items`` grouped by dimension
    (positives first, then negatives, each in file order). Duplicated texts are kept: they count
    twice in their dimension's mean, as in the reference code."""

    dims: tuple[str, ...]
    items: tuple[Followup, ...]
    source: str = "<built-in>"

    def __post_init__(self):
        if not self.dims:
            raise ValueError("a follow-up set needs at least one dimension")
        for d in self.dims:
            pos = sum(1 for f in self.items if f.dim == d and f.positive)
            neg = sum(1 for f in self.items if f.dim == d and not f.positive)
            if pos == 0 or neg == 0:
                raise ValueError(f"dimension {d!r} needs at least one positive and one negative follow-up")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def texts(self) -> list[str]:
        return [f.text for f in self.items]

    def subset(self, dims: Iterable[str]) -> "FollowupSet":
        """Keep only ``dims`` (in the given order); unknown names raise ``DataError``."""
        wanted = [d.strip() for d in dims if d.strip()]
        if not wanted:
            raise DataError(self.source, None, "dims", "empty list of dimensions")
        unknown = [d for d in wanted if d not in self.dims]
        if unknown:
            raise DataError(self.source, None, "dims",
                            f"unknown dimension(s) {', '.join(unknown)}; this set has {', '.join(self.dims)}")
        keep = list(dict.fromkeys(wanted))
        return FollowupSet(tuple(keep), tuple(f for d in keep for f in self.items if f.dim == d), self.source)


def parse_followups(obj: object, source: str = "<object>") -> FollowupSet:
    """Validate a ``{dim: {"positive": [...], "negative": [...]}}`` object into a ``FollowupSet``."""
    if not isinstance(obj, dict) or not obj:
        raise DataError(source, None, None,
                        "expected a non-empty mapping {dimension: {positive: [...], negative: [...]}}, "
                        f"got {type(obj).__name__ if obj else 'an empty one'}")
    items: list[Followup] = []
    for dim, body in obj.items():
        if not isinstance(dim, str) or not dim.strip():
            raise DataError(source, None, str(dim), "a dimension name must be a non-empty string")
        if not isinstance(body, dict):
            raise DataError(source, None, dim, f"expected a mapping with 'positive' and 'negative', got {type(body).__name__}")
        extra = sorted(set(body) - set(POLARITIES))
        if extra:
            raise DataError(source, None, f"{dim}.{extra[0]}", "unknown key; expected only 'positive' and 'negative'")
        for pol in POLARITIES:
            lst = body.get(pol)
            if lst is None:
                raise DataError(source, None, f"{dim}.{pol}", "missing")
            if not isinstance(lst, list) or not lst:
                raise DataError(source, None, f"{dim}.{pol}", "expected a non-empty list of strings")
            for i, text in enumerate(lst):
                if not isinstance(text, str) or not text.strip():
                    raise DataError(source, None, f"{dim}.{pol}[{i}]", f"expected a non-empty string, got {text!r}")
                items.append(Followup(dim, pol == "positive", text))
    return FollowupSet(tuple(obj), tuple(items), source)


def _read(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, None, None, "follow-up file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, None, None, f"cannot read follow-up file: {e}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise DataError(path, mark.line + 1 if mark else None, None, f"malformed YAML: {getattr(e, 'problem', e)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, None, f"malformed JSON: {e.msg} at column {e.colno}") from None


def default_followups_path() -> Path:
    """The packaged follow-up file of the FLR paper."""
    return Path(str(resources.files("finealign.resources") / "flr_followups" / "followups.json"))


def load_followups(path: str | Path | None = None, dims: Sequence[str] | str | None = None) -> FollowupSet:
    """Load a follow-up set: the paper's default (``path=None``) or a JSON/YAML file.

    ``dims``: a subset of dimensions, as a list or a ``+``-separated string (``"relevance+correctness"``).
    """
    p = default_followups_path() if path is None or str(path) in ("", "default") else Path(path)
    fs = parse_followups(_read(p), str(p) if path not in (None, "", "default") else "followups.json (built-in)")
    if dims:
        fs = fs.subset(dims.split("+") if isinstance(dims, str) else dims)
    return fs
