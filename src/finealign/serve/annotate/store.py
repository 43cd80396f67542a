"""SQLite storage of the annotation app: items, annotators, assignments, annotations.

One database file per annotation project, in WAL mode with ``synchronous=FULL``: every submit is
one transaction, committed to disk before the API answers, so a crash or a restart loses nothing
that was submitted. Several server threads (and processes) may share the file; every write runs
in a ``BEGIN IMMEDIATE`` transaction, so assignment and submission are serialised without a lock
of our own. All SQL takes its values as parameters, never by string formatting.

Items come from one of two kinds of input records:

* pairs ``prompt/chosen/rejected`` -> **edit** mode: the annotator confirms (or flips) which
  response is worse and edits it minimally;
* edit records ``prompt/original/edited`` (the output of ``finealign edit``) -> **review** mode:
  the annotator accepts, corrects or rejects the LLM's edit.

Assignment: an annotator is given the oldest item (by import order) that they have not seen and
that still needs annotators: fewer than ``target`` annotations that count (a submission or a
flag; a plain skip does not), counting other annotators' open assignments younger than the lease
(``lease_s``) as taken. ``target`` is 1, or ``overlap_k`` for the share of items chosen for
agreement measurement (:meth:`AnnotationStore.set_overlap`). An annotator's unfinished assignment
is served again first, so a reload or a server restart gives the same item back.

History: every stored submission (edits, decisions, skips, flags) is appended to ``submissions`` in the
same transaction; ``annotations`` holds each person's latest answer per item (its seconds summed over
resubmissions), which is what is exported, so the export takes the latest submitted edit. A skip never
silently replaces a submitted edit: a skip of an item the person has a submitted edit (or review
decision) for raises ``Conflict`` (HTTP 409) unless it carries ``confirm=True`` (a page left open in a
second tab, or a stale one, cannot withdraw work by accident); a confirmed skip withdraws the edit from
the export, and the edit stays in the history.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ...edits.minimality import UNCHANGED, check_edit
from ...errors import FinealignError

__all__ = ["AnnotationStore", "Annotator", "Conflict", "Item", "Submission", "NotAllowed", "NotFound", "Invalid",
           "SCHEMA_VERSION", "hash_token"]

SCHEMA_VERSION = "2"  # 2: the submissions history (a version-1 database is upgraded when opened)
MODES = ("edit", "review")
ACTIONS = ("submit", "skip")
SIDES = ("rejected", "chosen")
DECISIONS = ("accept", "correct", "reject")
MAX_SECONDS = 24 * 3600.0  # one item's time, as reported by a page, is clamped to [0, a day]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL CHECK (mode IN ('edit', 'review')),
    prompt TEXT NOT NULL,
    chosen TEXT, rejected TEXT,
    original TEXT, llm_edit TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    target INTEGER NOT NULL DEFAULT 1,
    done INTEGER NOT NULL DEFAULT 0,  -- annotations that count towards the target (not plain skips)
    digest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_open ON items(id) WHERE done < target;
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    assigned_at REAL NOT NULL,
    PRIMARY KEY (item_id, annotator_id)
);
CREATE TABLE IF NOT EXISTS annotations (
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    status TEXT NOT NULL CHECK (status IN ('submitted', 'skipped', 'flagged')),
    worse TEXT, decision TEXT, original TEXT, edited TEXT, flag TEXT,
    seconds REAL NOT NULL DEFAULT 0,
    edit_ratio REAL, minimality TEXT,
    submissions INTEGER NOT NULL DEFAULT 1,
    first_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (item_id, annotator_id)
);
CREATE INDEX IF NOT EXISTS assignments_by_annotator ON assignments(annotator_id, assigned_at);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    status TEXT NOT NULL CHECK (status IN ('submitted', 'skipped', 'flagged')),
    worse TEXT, decision TEXT, original TEXT, edited TEXT, flag TEXT,
    seconds REAL NOT NULL DEFAULT 0,
    edit_ratio REAL, minimality TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS submissions_by_item ON submissions(item_id, annotator_id, id);
"""
# a version-1 database: its current answers become the first entries of the history
_MIGRATE_1 = ("INSERT INTO submissions(item_id, annotator_id, status, worse, decision, original, edited, flag, seconds, "
              "edit_ratio, minimality, at) SELECT item_id, annotator_id, status, worse, decision, original, edited, "
              "flag, seconds, edit_ratio, minimality, updated_at FROM annotations ORDER BY updated_at, item_id")


class NotFound(FinealignError):
    """No such item (HTTP 404)."""


class NotAllowed(FinealignError):
    """The item was never assigned to this annotator (HTTP 403)."""


class Invalid(FinealignError):
    """A submission that cannot be stored (HTTP 422)."""


class Conflict(FinealignError):
    """A skip that would replace a submitted edit without ``confirm`` (HTTP 409)."""


def hash_token(token: str) -> str:
    """sha256 hex of a token: the database stores no token in the clear."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str


@dataclass(frozen=True)
class Item:
    """One unit of work. Edit mode fills ``chosen``/``rejected``; review mode ``original``/``llm_edit``.
    ``prompt`` is a string or a list of chat messages, as in the input record."""

    id: int
    key: str
    mode: str
    prompt: Any
    chosen: str | None
    rejected: str | None
    original: str | None
    llm_edit: str | None
    meta: dict
    target: int

    def original_for(self, worse: str | None) -> str:
        """The text being edited: the worse response (edit mode) or the original (review mode)."""
        if self.mode == "review":
            return self.original or ""
        return self.chosen if worse == "chosen" else self.rejected  # type: ignore[return-value]

    def to_api(self) -> dict:
        d = {"id": self.id, "key": self.key, "mode": self.mode, "prompt": self.prompt}
        if self.mode == "edit":
            d.update(chosen=self.chosen, rejected=self.rejected)
        else:
            d.update(original=self.original, llm_edit=self.llm_edit)
        return d


@dataclass(frozen=True)
class Submission:
    """What a page sends. ``action``: submit | skip; ``worse``: rejected | chosen (edit mode);
    ``decision``: accept | correct | reject (review mode); ``edited``: the edited text (edit mode,
    review ``correct``); ``flag``: a reason, kept with the row (a flagged skip counts as done);
    ``seconds``: time spent on the item by the page's clock; ``confirm``: a skip may replace this
    person's submitted edit of the item (otherwise ``Conflict``)."""

    item_id: int
    action: str = "submit"
    worse: str | None = None
    decision: str | None = None
    edited: str | None = None
    flag: str | None = None
    seconds: float = 0.0
    confirm: bool = False


def _item(row: sqlite3.Row) -> Item:
    return Item(row["id"], row["key"], row["mode"], json.loads(row["prompt"]), row["chosen"], row["rejected"],
                row["original"], row["llm_edit"], json.loads(row["meta"]), row["target"])


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class AnnotationStore:
    """The annotation database at ``path`` (created with its schema when absent).

    ``lease_s``: seconds an unfinished assignment keeps its item from other annotators;
    ``max_ratio``: the minimality threshold recorded with every edit (``edits.minimality``).
    """

    def __init__(self, path: str | Path, *, lease_s: float = 1800.0, max_ratio: float = 0.5):
        self.path = Path(path)
        self.lease_s = float(lease_s)
        self.max_ratio = float(max_ratio)
        self._write_lock = threading.Lock()  # threads of one process queue here instead of polling SQLite's lock
        if self.path.is_dir():
            raise FinealignError(f"{self.path}: is a directory, expected an SQLite file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._raw() as con:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_SCHEMA)
                con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
                got = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
                if got == "1":  # upgrade once, even when several processes open the file at the same time
                    con.execute("BEGIN IMMEDIATE")
                    if con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "1":
                        con.execute(_MIGRATE_1)
                        con.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))
                    con.execute("COMMIT")
                    got = SCHEMA_VERSION
        except sqlite3.DatabaseError as e:
            raise FinealignError(f"{self.path}: not an annotation database ({e})") from None
        if got != SCHEMA_VERSION:
            raise FinealignError(f"{self.path}: schema version {got}, this finealign reads {SCHEMA_VERSION}")

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _raw(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout=60000")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            yield con
        finally:
            con.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads (each statement sees a consistent snapshot)."""
        with self._raw() as con:
            yield con

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any error.

        Writers of this process wait on a lock (woken as soon as it is free); other processes wait
        on SQLite's busy timeout.
        """
        with self._write_lock, self._raw() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ------------------------------------------------------------------ items

    def import_file(self, path: str | Path) -> tuple[int, int]:
        """Load pairs (edit mode) or edit records (review mode) from ``path``: ``(added, already there)``.

        An item's key is the record's ``id``, else ``FILENAME:LINE``. Importing the same file again
        adds nothing; a key already in the database with other content raises ``DataError``.
        """
        from ...data.io import iter_objects
        from ...data.records import EditRecord, FieldError, PairRecord, detect_kind
        from ...errors import DataError

        path = Path(path)
        rows: list[tuple[int, str, tuple]] = []
        kind = None
        seen: set[str] = set()
        for line, obj in iter_objects(path):
            try:
                k = detect_kind(obj) if kind is None else kind
                if k not in ("pair", "edit"):
                    raise FieldError("prompt", f"expected pairs (prompt/chosen/rejected) or edit records "
                                               f"(prompt/original/edited), got {k} records")
                kind = k
                rec = PairRecord.from_obj(obj) if k == "pair" else EditRecord.from_obj(obj)
            except FieldError as e:
                raise DataError(path, line, e.field, e.problem) from None
            key = rec.id if rec.id is not None else f"{path.name}:{line}"
            if key in seen:
                raise DataError(path, line, "id", f"duplicate id {key!r}")
            seen.add(key)
            if k == "pair":
                vals = ("edit", json.dumps(rec.prompt, ensure_ascii=False), rec.chosen, rec.rejected, None, None)
            else:
                vals = ("review", json.dumps(rec.prompt, ensure_ascii=False), None, None, rec.original, rec.edited)
            vals = vals + (json.dumps(rec.meta, ensure_ascii=False, sort_keys=True),)
            rows.append((line, key, vals + (_digest(key, *vals),)))
        if not rows:
            raise DataError(path, None, None, "no records")
        added = existing = 0
        with self.write() as con:
            for line, key, vals in rows:
                old = con.execute("SELECT digest FROM items WHERE key=?", (key,)).fetchone()
                if old is not None:
                    if old[0] != vals[-1]:
                        raise DataError(path, line, "id", f"item {key!r} is already in {self.path} with other "
                                                          "content; use a new database or give the record a new id")
                    existing += 1
                    continue
                con.execute("INSERT INTO items(key, mode, prompt, chosen, rejected, original, llm_edit, meta, digest) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (key,) + vals)
                added += 1
        return added, existing

    def set_overlap(self, share: float, k: int = 2) -> int:
        """Give ``round(share * n_items)`` items a target of ``k`` annotators (the others 1).

        The items are the ones with the smallest sha256 of their key: a fixed, spread-out choice that
        does not depend on the import order. Returns the number of overlap items.
        """
        if not 0.0 <= share <= 1.0:
            raise FinealignError(f"overlap share must lie in [0, 1], got {share}")
        if k < 2:
            raise FinealignError(f"annotators per overlap item must be >= 2, got {k}")
        with self.write() as con:
            keys = [(r[0], r[1]) for r in con.execute("SELECT id, key FROM items")]
            keys.sort(key=lambda t: hashlib.sha256(t[1].encode()).hexdigest())
            n = round(share * len(keys))
            con.execute("UPDATE items SET target=1")
            con.executemany("UPDATE items SET target=? WHERE id=?", [(k, i) for i, _ in keys[:n]])
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('overlap', ?)", (json.dumps([share, k]),))
        return n

    def count_items(self) -> int:
        with self.read() as con:
            return con.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def items(self) -> list[Item]:
        with self.read() as con:
            return [_item(r) for r in con.execute("SELECT * FROM items ORDER BY id")]

    # ------------------------------------------------------------------ annotators

    def add_annotator(self, name: str, *, rotate: bool = False) -> str:
        """Create annotator ``name`` and return their new token (only its hash is stored).

        ``rotate=True`` gives an existing annotator a new token (the old one stops working).
        """
        name = name.strip()
        if not name or len(name) > 64 or any(not c.isprintable() for c in name):
            raise FinealignError("annotator name: 1-64 printable characters")
        token = secrets.token_urlsafe(24)
        with self.write() as con:
            row = con.execute("SELECT id FROM annotators WHERE name=?", (name,)).fetchone()
            if row is not None and not rotate:
                raise FinealignError(f"annotator {name!r} exists; pass --rotate to issue a new token")
            if row is None:
                con.execute("INSERT INTO annotators(name, token_sha256, created) VALUES (?, ?, ?)",
                            (name, hash_token(token), time.time()))
            else:
                con.execute("UPDATE annotators SET token_sha256=? WHERE id=?", (hash_token(token), row[0]))
        return token

    def annotator_for_token(self, token: str) -> Annotator | None:
        with self.read() as con:
            row = con.execute("SELECT id, name FROM annotators WHERE token_sha256=?", (hash_token(token),)).fetchone()
        return Annotator(row[0], row[1]) if row else None

    def annotators(self) -> list[Annotator]:
        with self.read() as con:
            return [Annotator(r[0], r[1]) for r in con.execute("SELECT id, name FROM annotators ORDER BY id")]

    # ------------------------------------------------------------------ assignment

    def next_item(self, who: Annotator, now: float | None = None) -> Item | None:
        """The annotator's unfinished item, else a newly assigned one, else None (nothing left)."""
        now = time.time() if now is None else now
        with self.read() as con:  # most calls find the open item without taking the write lock
            row = con.execute(_OPEN, (who.id,)).fetchone()
        if row is not None:
            return _item(row)
        with self.write() as con:
            row = con.execute(_OPEN, (who.id,)).fetchone()  # a concurrent call of the same annotator may have won
            if row is not None:
                return _item(row)
            row = con.execute(_AVAILABLE + " ORDER BY i.id LIMIT 1", (who.id, now - self.lease_s)).fetchone()
            if row is None:
                return None
            con.execute("INSERT INTO assignments(item_id, annotator_id, assigned_at) VALUES (?, ?, ?)",
                        (row["id"], who.id, now))
            return _item(row)

    def get_item(self, who: Annotator, item_id: int) -> tuple[Item, dict | None]:
        """An item assigned to ``who`` and their annotation of it (None if none yet)."""
        with self.read() as con:
            row = con.execute("SELECT * FROM items WHERE id=?", (item_id,)).fetchone()
            if row is None:
                raise NotFound(f"no item {item_id}")
            if con.execute("SELECT 1 FROM assignments WHERE item_id=? AND annotator_id=?",
                           (item_id, who.id)).fetchone() is None:
                raise NotAllowed(f"item {item_id} is not assigned to {who.name}")
            ann = con.execute("SELECT * FROM annotations WHERE item_id=? AND annotator_id=?",
                              (item_id, who.id)).fetchone()
        return _item(row), (_annotation(ann) if ann else None)

    # ------------------------------------------------------------------ submission

    def submit(self, who: Annotator, sub: Submission, now: float | None = None) -> dict:
        """Store ``who``'s answer for ``sub.item_id`` in one transaction: appended to the history, and as their
        latest annotation of the item; returns the annotation.

        Raises NotFound, NotAllowed (never assigned to ``who``), Invalid (an edit that changes nothing, a
        missing field, a value out of range) or Conflict (a skip that would replace ``who``'s submitted edit,
        without ``sub.confirm``; nothing is stored).
        """
        now = time.time() if now is None else now
        seconds = min(max(float(sub.seconds or 0.0), 0.0), MAX_SECONDS)
        flag = (sub.flag or "").strip() or None
        item, _ = self.get_item(who, sub.item_id)  # items and assignments are never deleted: checked once
        values = _resolve(item, sub, flag, self.max_ratio)  # the diff work happens outside the write lock
        with self.write() as con:
            old = con.execute("SELECT status, updated_at FROM annotations WHERE item_id=? AND annotator_id=?",
                              (sub.item_id, who.id)).fetchone()
            if values["status"] != "submitted" and old is not None and old[0] == "submitted" and not sub.confirm:
                when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(old[1]))
                raise Conflict(f"item {item.key}: {who.name} submitted an answer for it at {when} (in another tab, or "
                               "earlier); a skip would withdraw it. Send confirm=true to skip anyway, or keep it")
            con.execute("INSERT INTO submissions(item_id, annotator_id, status, worse, decision, original, edited, "
                        "flag, seconds, edit_ratio, minimality, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (sub.item_id, who.id, values["status"], values["worse"], values["decision"], values["original"],
                         values["edited"], flag, seconds, values["edit_ratio"], values["minimality"], now))
            delta = (values["status"] != "skipped") - (old is not None and old[0] != "skipped")
            if delta:
                con.execute("UPDATE items SET done = done + ? WHERE id=?", (delta, sub.item_id))
            con.execute(
                "INSERT INTO annotations(item_id, annotator_id, status, worse, decision, original, edited, flag, "
                "seconds, edit_ratio, minimality, submissions, first_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) "
                "ON CONFLICT(item_id, annotator_id) DO UPDATE SET status=excluded.status, worse=excluded.worse, "
                "decision=excluded.decision, original=excluded.original, edited=excluded.edited, "
                "flag=excluded.flag, seconds=annotations.seconds + excluded.seconds, "
                "edit_ratio=excluded.edit_ratio, minimality=excluded.minimality, "
                "submissions=annotations.submissions + 1, updated_at=excluded.updated_at",
                (sub.item_id, who.id, values["status"], values["worse"], values["decision"], values["original"],
                 values["edited"], flag, seconds, values["edit_ratio"], values["minimality"], now, now))
            ann = con.execute("SELECT * FROM annotations WHERE item_id=? AND annotator_id=?",
                              (sub.item_id, who.id)).fetchone()
        return _annotation(ann)

    # ------------------------------------------------------------------ reads for the page and reports

    def submissions(self, who: Annotator | None = None, item_id: int | None = None) -> list[dict]:
        """The history: every stored submission (oldest first), optionally of one person and/or one item;
        each ``{id, item_id, key, annotator, status, worse, decision, original, edited, flag, seconds,
        edit_ratio, minimality, at}``."""
        where, args = [], []
        if who is not None:
            where.append("s.annotator_id=?")
            args.append(who.id)
        if item_id is not None:
            where.append("s.item_id=?")
            args.append(int(item_id))
        sql = ("SELECT s.*, i.key, a.name AS annotator FROM submissions s JOIN items i ON i.id = s.item_id "
               "JOIN annotators a ON a.id = s.annotator_id" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY s.id")
        with self.read() as con:
            return [dict(r) for r in con.execute(sql, args).fetchall()]

    def history(self, who: Annotator, limit: int = 20) -> list[dict]:
        """``who``'s latest annotations, newest first: ``{item_id, key, status, updated_at}``."""
        with self.read() as con:
            rows = con.execute("SELECT n.item_id, i.key, n.status, n.updated_at FROM annotations n JOIN items i "
                               "ON i.id = n.item_id WHERE n.annotator_id=? ORDER BY n.updated_at DESC, n.item_id DESC "
                               "LIMIT ?", (who.id, int(limit))).fetchall()
        return [dict(r) for r in rows]

    def progress(self, who: Annotator | None = None, now: float | None = None) -> dict:
        """Counts for the page: items, items complete, and (for ``who``) done and still available."""
        now = time.time() if now is None else now
        with self.read() as con:
            total = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            complete = total - con.execute("SELECT COUNT(*) FROM items WHERE done < target").fetchone()[0]
            out = {"items": total, "complete": complete}
            if who is not None:
                mine = dict(con.execute("SELECT status, COUNT(*) FROM annotations WHERE annotator_id=? GROUP BY status",
                                        (who.id,)).fetchall())
                open_ = con.execute(
                    "SELECT COUNT(*) FROM assignments a WHERE a.annotator_id=? AND NOT EXISTS (SELECT 1 FROM "
                    "annotations n WHERE n.item_id=a.item_id AND n.annotator_id=a.annotator_id)", (who.id,)).fetchone()[0]
                avail = con.execute("SELECT COUNT(*) FROM (" + _AVAILABLE + ")",
                                    (who.id, now - self.lease_s)).fetchone()[0]
                done = sum(mine.values())
                out.update(done=done, submitted=mine.get("submitted", 0), skipped=mine.get("skipped", 0),
                           flagged=mine.get("flagged", 0), remaining=open_ + avail)
        return out

    def annotation_rows(self) -> list[dict]:
        """Every annotation joined with its item and annotator name, in item then annotator order."""
        with self.read() as con:
            rows = con.execute("SELECT n.*, a.name AS annotator, i.key, i.mode, i.prompt, i.chosen, i.rejected, "
                               "i.original AS item_original, i.llm_edit, i.meta AS item_meta, i.target "
                               "FROM annotations n JOIN annotators a ON a.id = n.annotator_id "
                               "JOIN items i ON i.id = n.item_id ORDER BY n.item_id, n.annotator_id").fetchall()
        return [dict(r) for r in rows]


# The item assigned to ``?`` (an annotator id) longest ago that they have not annotated yet.
_OPEN = ("SELECT i.* FROM assignments a JOIN items i ON i.id = a.item_id WHERE a.annotator_id = ? AND NOT EXISTS "
         "(SELECT 1 FROM annotations n WHERE n.item_id = a.item_id AND n.annotator_id = a.annotator_id) "
         "ORDER BY a.assigned_at, a.item_id LIMIT 1")

# Items never assigned to ``?`` (an annotator id; an annotation needs an assignment), whose counted
# annotations (``done``) plus other annotators' open assignments younger than the lease (``?``: the
# oldest live assigned_at) fall short of the item's target. ``done < target`` uses the partial index
# ``items_open``, so finished items cost nothing.
_AVAILABLE = (
    "SELECT i.* FROM items i WHERE i.done < i.target "
    "AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id AND a.annotator_id = ?) "
    "AND i.done "
    "  + (SELECT COUNT(*) FROM assignments a WHERE a.item_id = i.id AND a.assigned_at > ? AND NOT EXISTS "
    "     (SELECT 1 FROM annotations n2 WHERE n2.item_id = a.item_id AND n2.annotator_id = a.annotator_id)) "
    "  < i.target"
)


def _annotation(row: sqlite3.Row) -> dict:
    keys = ("item_id", "status", "worse", "decision", "original", "edited", "flag", "seconds", "edit_ratio",
            "minimality", "submissions", "first_at", "updated_at")
    return {k: row[k] for k in keys}


def _resolve(item: Item, sub: Submission, flag: str | None, max_ratio: float) -> dict:
    """The row values of one submission; the texts being edited always come from the item, never the page."""
    out: dict[str, Any] = {"status": "submitted", "worse": None, "decision": None, "original": None, "edited": None,
                           "edit_ratio": None, "minimality": None}
    if sub.action not in ACTIONS:
        raise Invalid(f"action: expected one of {', '.join(ACTIONS)}, got {sub.action!r}")
    if sub.action == "skip":
        out["status"] = "flagged" if flag else "skipped"
        return out
    if item.mode == "edit":
        worse = sub.worse or "rejected"
        if worse not in SIDES:
            raise Invalid(f"worse: expected one of {', '.join(SIDES)}, got {worse!r}")
        if sub.edited is None:
            raise Invalid("edited: missing")
        out.update(worse=worse, original=item.original_for(worse), edited=sub.edited)
    else:
        if sub.decision not in DECISIONS:
            raise Invalid(f"decision: expected one of {', '.join(DECISIONS)}, got {sub.decision!r}")
        decision, edited = sub.decision, None
        if decision == "accept":
            edited = item.llm_edit
        elif decision == "correct":
            if sub.edited is None:
                raise Invalid("edited: missing (a correction needs the corrected text)")
            edited = sub.edited
            if edited == item.llm_edit:
                decision = "accept"
        out.update(decision=decision, original=item.original, edited=edited)
        if decision == "reject":
            return out
    verdict = check_edit(out["original"], out["edited"], max_ratio)
    if verdict.status == UNCHANGED and (item.mode == "edit" or out["decision"] == "correct"):
        raise Invalid("edited: nothing changed (up to whitespace); skip the item, or reject the LLM edit, instead")
    out.update(edit_ratio=verdict.ratio, minimality=verdict.status)
    return out


def rows_by_item(rows: Sequence[dict]) -> dict[int, list[dict]]:
    """Annotation rows grouped by item id (order kept)."""
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["item_id"], []).append(r)
    return out
