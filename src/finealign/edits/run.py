"""The edit job: a file of pairs (or responses) in, minimal-edit records out; resumable.

Input: preference pairs (``prompt/chosen/rejected``: the *rejected* response is edited),
responses (``prompt/completion``) or edit records (``prompt/original/edited``: the *original* is
edited again, and the existing edit is kept as ``meta["reference"]`` for comparison). Ids are the
records' ``id`` (else the 1-based line number). The whole input is validated before any model is
asked; a bad record stops the job with ``path:line: field: problem`` and nothing written.

Output: one ``EditRecord`` line per finished edit, ``{"id", "prompt", "original", "edited",
"meta": {..input meta, "editor", "template", "source", "edit_ratio", "minimality"}}``, appended and
flushed one by one (``JsonlAppender``), so an interrupted job loses nothing it finished and a
rerun continues where it stopped. Beside ``OUT.jsonl``:

* ``OUT.failed.jsonl``: the requests that failed in the last run (empty reply, error, timeout,
  over the context window) with reason and message; rewritten at the end of every run. Failed
  ids are not in ``OUT``, so a rerun retries them.
* ``OUT.dropped.jsonl``: with ``on_violation="drop"``, the edits the minimality guard rejected
  (not retried: the editor answered; rerun with ``flag`` after deleting the file to keep them).

Inputs with an empty response to edit are skipped and counted; they are never sent.

``OUT`` is tied to the editor (name, local model fingerprint, template, decoding settings) and the
guard's settings (``data.manifest``; the entries are the identity fields of ``EditConfig``, the settings of
``finealign edit`` in ``edits.config``, ``edit_identity``): a rerun with other ones refuses to resume;
``EditJobConfig.overwrite`` starts afresh.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..data.identity import refuse_changed_records
from ..data.io import JsonlAppender, iter_objects, write_jsonl
from ..data.manifest import prepare_output
from ..data.records import FieldError, Prompt, check_prompt, check_text, detect_kind
from ..errors import DataError, FinealignError
from ..models.fingerprint import model_fingerprint
from .editors import EditRequest, Editor
from .config import EditConfig
from .minimality import MinimalityConfig, MinimalityStats, check_edit

__all__ = ["EditConfig", "EditItem", "EditJobConfig", "EditRunStats", "dropped_path", "edit_identity",
           "editor_settings", "failed_path", "read_edit_inputs", "run_edits"]

SOURCES = {"pair": ("rejected", "rejected"), "response": ("completion", "completion"), "edit": ("original", "original")}


@dataclass(frozen=True)
class EditItem:
    id: str
    prompt: Prompt
    original: str
    source: str  # the input field edited: rejected | completion | original
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EditJobConfig:
    """``limit``: edit only the first N input records (a rerun with the same limit resumes them).
    ``overwrite``: start afresh (delete ``OUT`` and its side files) instead of resuming."""

    minimality: MinimalityConfig = MinimalityConfig()
    limit: int | None = None
    overwrite: bool = False

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


@dataclass(frozen=True)
class EditRunStats:
    """What one run did (``this_run``) and what the output files hold now (``total``)."""

    inputs: int  # records in the input file
    selected: int  # after --limit
    done_before: int  # already in OUT (or dropped) when the run started
    skipped_empty: int  # empty response to edit: never sent
    attempted: int  # sent to the editor in this run
    retried_failed: int  # of those, failed in the previous run
    written: int  # appended to OUT in this run
    dropped: int  # rejected by the guard in this run (on_violation=drop)
    failed: int  # failed in this run (in OUT.failed.jsonl)
    truncated: int  # edits of this run where the editor hit its token limit (kept; see meta.finish_reason)
    failure_reasons: dict[str, int]
    this_run: MinimalityStats
    total: MinimalityStats  # guard verdicts over every edit in OUT and OUT.dropped.jsonl
    seconds: float
    out: str
    failed_file: str | None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("inputs", "selected", "done_before", "skipped_empty", "attempted",
                                           "retried_failed", "written", "dropped", "failed", "truncated",
                                           "failure_reasons")}
        d.update(minimality_this_run=self.this_run.to_dict(), minimality_total=self.total.to_dict(),
                 seconds=round(self.seconds, 2), out=self.out, failed_file=self.failed_file)
        return d


def _side(out: Path, tag: str) -> Path:
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(f"{stem}.{tag}.jsonl")


def failed_path(out: str | Path) -> Path:
    return _side(Path(out), "failed")


def dropped_path(out: str | Path) -> Path:
    return _side(Path(out), "dropped")


def read_edit_inputs(path: str | Path) -> tuple[list[EditItem], int]:
    """``(items to edit, number of records skipped for an empty response)``; see the module docstring.

    Raises ``DataError`` (``path:line: field: problem``) on a malformed record, a record of another
    kind than the first, or a duplicate id.
    """
    items: list[EditItem] = []
    seen: dict[str, int] = {}
    kind = None
    empty = 0
    for line, obj in iter_objects(path):
        try:
            if kind is None:  # the first record decides the kind of the file
                kind = detect_kind(obj)
                if kind not in SOURCES:
                    raise FieldError("prompt", f"expected pairs (prompt/chosen/rejected), responses "
                                               f"(prompt/completion) or edits (prompt/original/edited), got a {kind} record")
            prompt = check_prompt(obj.get("prompt"))
            key, source = SOURCES[kind]
            original = check_text(obj.get(key, obj.get("response") if kind == "response" else None), key,
                                  allow_empty=True)
            rid = obj.get("id")
            if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip()):
                raise FieldError("id", f"expected a non-empty string or integer, got {rid!r}")
            meta = obj.get("meta") or {}
            if not isinstance(meta, dict):
                raise FieldError("meta", f"expected an object, got {type(meta).__name__}")
        except FieldError as e:
            raise DataError(path, line, e.field, e.problem) from None
        rid = str(line) if rid is None else str(rid)
        if rid in seen:
            raise DataError(path, line, "id", f"duplicate id {rid!r} (first at line {seen[rid]})")
        seen[rid] = line
        if not original.strip():
            empty += 1
            continue
        meta = dict(meta)
        if kind == "edit" and isinstance(obj.get("edited"), str):
            meta["reference"] = obj["edited"]
        items.append(EditItem(rid, prompt, original, source, meta))
    if not items and not empty:
        raise DataError(path, None, None, "no records in file")
    return items, empty


def _verdicts_in(paths: list[Path], max_ratio: float):
    for p in paths:
        if not p.exists():
            continue
        for _, o in iter_objects(p):
            if isinstance(o.get("original"), str) and isinstance(o.get("edited"), str):
                yield check_edit(o["original"], o["edited"], max_ratio)


def editor_settings(editor: Editor) -> dict:
    """What makes an editor's edits (for the output's manifest, ``data.manifest``): its name, a local
    model's fingerprint, the editing template (id and text digest) and its decoding settings."""
    import hashlib

    tpl = editor.template
    d: dict = {"editor": editor.name, "template": tpl.id,
               "template_digest": hashlib.sha256(f"{tpl.system}\0{tpl.user}".encode()).hexdigest()[:16]}
    for key in ("temperature", "top_p", "max_new_tokens", "max_tokens", "seed"):
        if hasattr(editor, key):
            d[key] = getattr(editor, key)
    if getattr(editor, "tokenizer", None) is not None and not isinstance(getattr(editor, "model", None), str):
        d["model"] = model_fingerprint(editor.model)  # a local editor's weights
    return d


def edit_identity(editor: Editor, guard: MinimalityConfig) -> dict:
    """The manifest of an edit output: the identity fields of ``EditConfig`` (``data.identity.resume_identity``;
    the input and ``limit`` are keyed: more inputs append), read off the editor object (``editor``: its
    ``editor_settings``; a local editor's weights' dtype; an endpoint's ``base_url``; the template's id; its
    temperature and token limit) and the minimality guard."""
    from ..data.identity import resume_identity

    model = getattr(editor, "model", None)
    dtype = None if model is None or isinstance(model, str) else str(getattr(model, "dtype", "")).removeprefix("torch.")
    own = ("template", "temperature", "max_new_tokens", "max_tokens")  # entries of their own below
    return resume_identity(EditConfig, {
        "editor": {k: v for k, v in editor_settings(editor).items() if k not in own}, "dtype": dtype or None,
        "base_url": getattr(editor, "base_url", None),
        "template": editor.template.id, "temperature": getattr(editor, "temperature", None),
        "max_new_tokens": getattr(editor, "max_new_tokens", getattr(editor, "max_tokens", None)),
        "max_ratio": guard.max_ratio, "on_violation": guard.on_violation})


def _open_outputs(out_path: Path, dpath: Path, *, drop: bool):
    """The edits output and (``drop``) the dropped-edits file, opened to append; and {id: [prompt, original]}
    that each edit already there was made from (for ``data.identity.refuse_changed_records``)."""
    made_from: dict[str, list] = {}

    def row_key(o: dict) -> str:
        made_from.setdefault(str(o["id"]), [o.get("prompt"), o.get("original")])
        return str(o["id"])

    return JsonlAppender(out_path, key=row_key), (JsonlAppender(dpath, key=row_key) if drop else None), made_from


def run_edits(editor: Editor, in_path: str | Path, out_path: str | Path, config: EditJobConfig = EditJobConfig(),
              *, on_progress: Callable[[int, int, str], None] | None = None) -> EditRunStats:
    """Edit every selected input not yet in ``out_path``; see the module docstring. Returns the counts.

    ``on_progress(done, total, info)`` is called with inputs done out of those selected, once before
    the first edit and after each one (``info``: failures so far). Raises ``FinealignError`` for a bad
    output path and ``DataError`` for a bad input file.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if not out_path.name.endswith(".jsonl"):
        raise FinealignError(f"{out_path}: the output must be a .jsonl file")
    if out_path.exists() and in_path.exists() and out_path.resolve() == in_path.resolve():
        raise FinealignError(f"{out_path}: the output file must differ from the input file")
    all_items, empty = read_edit_inputs(in_path)
    n_inputs = len(all_items) + empty
    items = all_items[: config.limit] if config.limit else all_items
    mcfg = config.minimality
    fpath, dpath = failed_path(out_path), dropped_path(out_path)
    resumable = any(p.exists() and p.stat().st_size > 0 for p in (out_path, dpath))
    prepare_output(out_path, "edit", edit_identity(editor, mcfg), overwrite=config.overwrite,
                   side_files=[fpath, dpath], has_content=resumable)
    prev_failures: list[dict] = []
    if fpath.exists():
        try:
            prev_failures = [o for _, o in iter_objects(fpath)]
        except DataError:
            prev_failures = []  # a side file damaged by a crash: informational only
    prev_failed = {str(o.get("id")) for o in prev_failures}

    t0 = time.perf_counter()
    verdicts, failures = [], []
    resolved: set[str] = set()
    written = dropped = truncated = 0
    out, drop, made_from = _open_outputs(out_path, dpath, drop=dpath.exists() or mcfg.on_violation == "drop")
    try:
        refuse_changed_records(out_path, made_from, {it.id: [it.prompt, it.original] for it in items}, "input record")
        done = out.done | (drop.done if drop else set())
        todo = [it for it in items if it.id not in done]
        by_id = {it.id: it for it in todo}
        n_done = len(items) - len(todo)
        if on_progress is not None:
            on_progress(n_done, len(items), "")
        for res in editor.edit([EditRequest(it.id, it.prompt, it.original) for it in todo]):
            it = by_id[res.id]
            if not res.ok:
                failures.append({"id": it.id, "reason": res.reason, "error": res.error, "attempts": res.attempts,
                                 "editor": editor.name})
            else:
                v = check_edit(it.original, res.edited, mcfg.max_ratio)
                verdicts.append(v)
                rec = {"id": it.id, "prompt": it.prompt, "original": it.original, "edited": res.edited,
                       "meta": {**it.meta, "editor": editor.name, "template": editor.template.id,
                                "source": it.source, "edit_ratio": round(v.ratio, 4), "minimality": v.status,
                                "finish_reason": res.finish_reason}}
                truncated += res.finish_reason == "length"
                resolved.add(it.id)
                if not v.ok and mcfg.on_violation == "drop":
                    drop.append(rec)
                    dropped += 1
                else:
                    out.append(rec)
                    written += 1
            n_done += 1
            if on_progress is not None:
                on_progress(n_done, len(items), f"failed {len(failures)}")
    finally:
        out.close()
        if drop is not None:
            drop.close()
        # failures of this run, plus earlier ones this run did not get to (an interrupted run)
        now = {f["id"] for f in failures}
        _write_failures(fpath, failures + [p for p in prev_failures
                                           if str(p.get("id")) not in resolved and str(p.get("id")) not in now])
    reasons: dict[str, int] = {}
    for f in failures:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    return EditRunStats(
        inputs=n_inputs, selected=len(items), done_before=len(items) - len(todo), skipped_empty=empty,
        attempted=len(todo), retried_failed=sum(it.id in prev_failed for it in todo), written=written,
        dropped=dropped, failed=len(failures), truncated=truncated, failure_reasons=reasons,
        this_run=MinimalityStats.from_verdicts(verdicts, mcfg.max_ratio),
        total=MinimalityStats.from_verdicts(_verdicts_in([out_path, dpath], mcfg.max_ratio), mcfg.max_ratio),
        seconds=time.perf_counter() - t0, out=str(out_path), failed_file=str(fpath) if fpath.exists() else None)


def _write_failures(path: Path, failures: list[dict]) -> None:
    """The failures of this run, atomically; no file when there are none."""
    if failures:
        write_jsonl(path, failures)
    elif path.exists():
        os.unlink(path)


def summary_line(stats: EditRunStats) -> str:
    t = stats.total
    return (f"edited {stats.written} (dropped {stats.dropped}, failed {stats.failed}, skipped empty "
            f"{stats.skipped_empty}, already done {stats.done_before}); guard over {t.total} edits in the output: "
            f"ok {t.ok}, unchanged {t.unchanged}, too large (> {t.max_ratio:g}) {t.too_large}"
            + (f", median ratio {t.ratio_median:.3f}" if t.ratio_median is not None else "")
            + (f"; {stats.truncated} edits hit the token limit" if stats.truncated else "")
            + (f"; failures: {json.dumps(stats.failure_reasons)} -> {stats.failed_file}" if stats.failed else ""))
