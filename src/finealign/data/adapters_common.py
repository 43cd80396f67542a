"""Helpers shared by the data-set adapters: reading source files and checking their fields.

Every problem in a source file becomes a ``DataError`` naming ``path:line: field: problem``, with the
field named as it is in the *source* file (``output_1``, ``feedback.summary``), so that a user can find it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from ..errors import DataError
from .io import iter_objects
from .records import Record


class Loaded(NamedTuple):
    """An adapter's result: the records, and how many source items were left out, by reason."""

    records: list[Record]
    skipped: Counter


class Row:
    """One object of a source file with its place, for field look-ups that report errors."""

    __slots__ = ("path", "line", "obj")

    def __init__(self, path: Path, line: int, obj: dict):
        self.path, self.line, self.obj = path, line, obj

    def error(self, field: str | None, problem: str) -> DataError:
        return DataError(self.path, self.line, field, problem)

    def get(self, dotted: str, default: Any = None) -> Any:
        """``a.b`` looks into nested objects; a missing key gives ``default``."""
        cur: Any = self.obj
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur

    def text(self, dotted: str, *, allow_empty: bool = False) -> str:
        v = self.get(dotted)
        if v is None:
            raise self.error(dotted, "missing")
        if not isinstance(v, str):
            raise self.error(dotted, f"expected a string, got {type(v).__name__}")
        if not allow_empty and not v.strip():
            raise self.error(dotted, "empty")
        return v

    def number(self, dotted: str) -> float:
        v = self.get(dotted)
        if v is None:
            raise self.error(dotted, "missing")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise self.error(dotted, f"expected a number, got {v!r}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise self.error(dotted, f"expected a finite number, got {v}")
        return float(v)

    def flag(self, dotted: str) -> bool:
        """A boolean that may be stored as ``true`` or as the string ``"True"`` (DeFacto's README)."""
        v = self.get(dotted)
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        raise self.error(dotted, "missing" if v is None else f"expected true or false, got {v!r}")

    def items(self, dotted: str, n: int | None = None) -> list:
        v = self.get(dotted)
        if v is None:
            raise self.error(dotted, "missing")
        if not isinstance(v, list):
            raise self.error(dotted, f"expected a list, got {type(v).__name__}")
        if n is not None and len(v) != n:
            raise self.error(dotted, f"expected {n} items, got {len(v)}")
        return v


def rows(path: Path) -> Iterator[Row]:
    """The objects of a JSONL or JSON file (``line`` is the JSONL line or the 1-based array index)."""
    for line, obj in iter_objects(path):
        yield Row(Path(path), line, obj)


def need_file(path: Path, name: str | None = None) -> Path:
    """``path`` itself when it is a file, else ``path/name``; a clear error when neither exists."""
    path = Path(path)
    if path.is_file():
        return path
    if name and (path / name).is_file():
        return path / name
    want = f" (expected {name} in it)" if name and path.is_dir() else ""
    raise DataError(path, None, None, f"file not found{want}")


def qa_prompt(question: str, passages: list, row: Row, field: str = "passages") -> str:
    """QA-Feedback's question and Wikipedia passages as one instruction.

    Each passage is ``[title, sentence, sentence, ...]``; its first sentence repeats the title
    followed by a blank line, which is cut so the title appears once.
    """
    lines = ["Answer the question using the passages below.", "", f"Question: {question.strip()}", "", "Passages:"]
    for i, p in enumerate(passages, start=1):
        if not isinstance(p, list) or not p or not all(isinstance(s, str) for s in p):
            raise row.error(f"{field}[{i - 1}]", "expected a list of strings [title, sentence, ...]")
        title, sents = p[0].strip(), [s.strip() for s in p[1:]]
        if sents and sents[0].startswith(title):
            sents[0] = sents[0][len(title):].strip()
        lines.append(f"[{i}] {title}: {' '.join(s for s in sents if s)}")
    return "\n".join(lines)
