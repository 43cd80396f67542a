"""Readers and writers.

Readers take JSONL, JSON (an array of objects, or an object with a list under ``data``), CSV
and Parquet (a CSV cell is text unless its column's schema asks for structure: ``csv_cell``),
and report every bad record as ``path:line: field: problem`` (``line`` is the line
in JSONL, the row's line in CSV counting the header as line 1, and the 1-based record number in
JSON and Parquet). Writers are atomic (temporary file in the same folder, then rename), so an
interrupted job never leaves a half-written file. ``JsonlAppender`` is for long jobs: it appends
and flushes record by record, and on reopening skips keys already written and drops a torn last
line, so a rerun continues where the last run stopped without duplicates.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import DataError
from .records import RECORD_TYPES, FieldError, Record, detect_kind

FORMATS = ("jsonl", "json", "csv", "parquet")


def file_format(path: Path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in FORMATS:
        return suffix
    raise DataError(path, None, None, f"unknown file type {suffix!r}; use .jsonl, .json, .csv or .parquet")


def _decode(path: Path, raw: bytes, line: int | None) -> str:
    """``raw`` as UTF-8 (a leading byte-order mark is dropped); ``line`` None means ``raw`` is the whole file."""
    try:
        return raw.decode("utf-8-sig" if line in (None, 1) else "utf-8")
    except UnicodeDecodeError as e:
        col = e.start + 1
        if line is None:  # whole file: find the line of the bad byte
            line = raw.count(b"\n", 0, e.start) + 1
            col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(path, line, None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {col})") from None


def iter_objects(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line, object)`` for every record of ``path``; raise ``DataError`` on the first bad one."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    fmt = file_format(path)
    if fmt == "jsonl":
        with open(path, "rb") as f:
            for n, raw in enumerate(f, start=1):
                text = _decode(path, raw, n).strip()
                if not text:
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise DataError(path, n, None, f"malformed JSON: {e.msg} at column {e.colno}") from None
                if not isinstance(obj, dict):
                    raise DataError(path, n, None, f"expected a JSON object, got {type(obj).__name__}")
                yield n, obj
    elif fmt == "json":
        text = _decode(path, path.read_bytes(), None)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, e.lineno, None, f"malformed JSON: {e.msg} at column {e.colno}") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError(path, None, None, "expected a JSON array of objects")
        for n, obj in enumerate(data, start=1):
            if not isinstance(obj, dict):
                raise DataError(path, n, None, f"expected a JSON object, got {type(obj).__name__}")
            yield n, obj
    elif fmt == "csv":
        text = _decode(path, path.read_bytes(), None)
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            if reader.fieldnames is None:
                return
            for row in reader:
                # the record ends on reader.line_num; quoted cells may span lines
                start = reader.line_num - sum(v.count("\n") for v in row.values() if isinstance(v, str))
                if None in row:
                    raise DataError(path, start, None, f"{len(reader.fieldnames) + len(row[None])} cells "
                                    f"but the header has {len(reader.fieldnames)} columns")
                yield start, _csv_row(path, start, row)
        except csv.Error as e:
            raise DataError(path, reader.line_num, None, f"malformed CSV: {e}") from None
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:
            raise DataError(path, None, None, f"cannot read Parquet: {e}") from None
        for n, obj in enumerate(table.to_pylist(), start=1):
            yield n, obj


def _csv_row(path: Path, line: int, row: dict) -> dict:
    """One CSV row as a record object: every cell is text unless its column's schema asks for
    structure (see ``csv_cell``); a header ``NAME:json`` names the field ``NAME``."""
    out = {}
    for k, v in row.items():
        name, _, tag = k.partition(":") if k.endswith(":json") else (k, "", "")
        try:
            out[name] = csv_cell(name, v, as_json=tag == "json")
        except ValueError as e:
            raise DataError(path, line, name, str(e)) from None
    return out


def csv_cell(column: str, v: str | None, *, as_json: bool = False) -> Any:
    """A CSV cell by its column's schema: text, except

    * ``as_json`` (a ``NAME:json`` header): the cell is JSON (an empty cell is absent);
    * ``meta``: a JSON object (an object's text that does not parse stays text, and the record
      reports it);
    * ``prompt``: chat messages when the cell is a JSON list of message objects (each with a
      ``role``), the one structure a prompt's schema admits; any other text, ``[1, 2, 3]`` too,
      is the prompt's text.

    Response fields (``chosen``, ``completion``, ...) are always text: ``{"answer": 42}`` is a
    response that happens to look like JSON. Raises ``ValueError`` for malformed JSON under ``:json``.
    """
    if v is None:
        return None
    s = v.strip()
    if as_json:
        if not s:
            return None
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON: {e.msg} at column {e.colno}") from None
    if column == "meta" and s.startswith("{"):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return v
    if column == "prompt" and s.startswith("["):
        try:
            parsed = json.loads(s)
        except json.JSONDecodeError:
            return v
        if isinstance(parsed, list) and parsed and all(isinstance(m, dict) and "role" in m for m in parsed):
            return parsed
    return v


def read_records(path: str | Path, kind: str | type[Record] | None = None) -> list[Record]:
    """Read and validate every record of ``path``.

    ``kind`` is a record kind (``pair``, ``edit``, ...), a record class, or ``None`` to detect
    it from the first record's fields. Raises ``DataError`` naming path, line and field.
    """
    cls: type[Record] | None
    if kind is None:
        cls = None
    elif isinstance(kind, str):
        if kind not in RECORD_TYPES:
            raise ValueError(f"unknown record kind {kind!r}; kinds: {', '.join(RECORD_TYPES)}")
        cls = RECORD_TYPES[kind]
    else:
        cls = kind
    out: list[Record] = []
    for line, obj in iter_objects(path):
        try:
            if cls is None:
                cls = RECORD_TYPES[detect_kind(obj)]
            out.append(cls.from_obj(obj))
        except FieldError as e:
            raise DataError(path, line, e.field, e.problem) from None
    return out


def _to_obj(r: Record | dict) -> dict:
    return r.to_obj() if isinstance(r, Record) else r


def _new_tmp(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` with the permissions a plain ``open`` would give (mkstemp makes 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
    return fd, tmp


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN / infinite float (at any depth) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def to_json(obj: Any, **kw) -> str:
    """Strict JSON text of ``obj`` (``json.dumps`` keywords; ``ensure_ascii`` defaults to False): a NaN or
    infinite float, which ``json.dumps`` would write as the non-JSON ``NaN`` / ``Infinity`` that strict parsers
    reject, is written as ``null`` (an undefined measure, e.g. an accuracy over no pairs)."""
    kw.setdefault("ensure_ascii", False)
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:  # only then walk the object: the common case stays one dumps
        return json.dumps(_finite(obj), allow_nan=False, **kw)


def write_jsonl(path: str | Path, records: Iterable[Record | dict]) -> Path:
    """Write records atomically: a temporary file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_tmp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(to_json(_to_obj(r)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_tmp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON (``to_json``: NaN / infinity as null), atomically."""
    return write_text_atomic(path, to_json(obj, indent=2) + "\n")


class JsonlAppender:
    """Append records to a JSONL file so that a rerun resumes.

    ``key`` maps an output object to its identity (e.g. ``lambda o: o["id"]``). On open, the
    keys already in the file are collected (``done``) and a torn last line, left by a killed
    run, is cut off. ``append`` writes one line and flushes it.
    """

    def __init__(self, path: str | Path, key: Callable[[dict], Any]):
        self.path = Path(path)
        self.key = key
        self.done: set = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._scan()
        self._f = open(self.path, "a", encoding="utf-8")

    def _scan(self) -> None:
        """Collect the keys written so far; cut a torn last line; refuse a file damaged elsewhere.

        Only the last line can be torn by a killed run (it has no newline, or does not parse). A
        bad line before it is not ours to delete: it raises ``DataError`` naming the line.
        """
        data = self.path.read_bytes()
        lines = data.split(b"\n")  # the last item is b"" when the file ends with a newline
        good = 0  # bytes of the file known to hold complete records
        for n, raw in enumerate(lines, start=1):
            last = n == len(lines) or (n == len(lines) - 1 and lines[-1] == b"")
            if raw.strip():
                try:
                    obj = json.loads(raw.decode("utf-8"))
                    if not isinstance(obj, dict):
                        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
                except (ValueError, UnicodeDecodeError) as e:
                    if last:
                        break  # torn last line: cut it
                    raise DataError(self.path, n, None, f"cannot resume: bad line before the end ({e}); "
                                    "fix or delete it") from None
                try:
                    self.done.add(self.key(obj))
                except Exception as e:
                    raise DataError(self.path, n, None, f"cannot resume: no key in this record "
                                    f"({type(e).__name__}: {e})") from None
            good += len(raw) + (1 if n < len(lines) else 0)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        elif data and not data.endswith(b"\n"):  # a complete last record without its newline
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def __contains__(self, k) -> bool:
        return k in self.done

    def append(self, obj: Record | dict) -> None:
        o = _to_obj(obj)
        k = self.key(o)
        self._f.write(to_json(o) + "\n")
        self._f.flush()
        self.done.add(k)

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
