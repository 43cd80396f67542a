"""``finealign score --scorer SPEC IN OUT``: add reward scores to every record of a file.

Response records (``prompt``/``completion``) get ``score``; pair records get ``score_chosen`` and
``score_rejected``; rating records (whose ``score`` is the human rating) get ``reward``. An FLR
scorer also adds its per-dimension scores (``flr_dims``, ``flr_dims_chosen``, ...). All other
fields are kept. The whole input is validated before anything is written; OUT is appended record
by record, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer

from ..errors import DataError, FinealignError

# record kind -> [(text field, output field, dims field)]
TARGETS = {
    "response": [("completion", "score", "flr_dims")],
    "pair": [("chosen", "score_chosen", "flr_dims_chosen"), ("rejected", "score_rejected", "flr_dims_rejected")],
    "rating": [("response", "reward", "flr_dims")],
}


class _OccurrenceKey:
    """Identity of an input record in the output: its original fields plus how many identical
    records came before it (so duplicated input lines are each scored once)."""

    def __init__(self, added: set[str]):
        self.added = added
        self.seen: Counter = Counter()

    def __call__(self, obj: dict):
        base = json.dumps({k: v for k, v in obj.items() if k not in self.added}, sort_keys=True, ensure_ascii=False)
        self.seen[base] += 1
        return base, self.seen[base]


def _load_items(path: Path):
    """Validated ``(line, raw object, record)`` of every record, and the record kind."""
    from ..data.io import iter_objects
    from ..data.records import RECORD_TYPES, FieldError, detect_kind

    kind, items = None, []
    for line, obj in iter_objects(path):
        try:
            k = detect_kind(obj)
            if kind is None:
                if k not in TARGETS:
                    raise DataError(path, line, None, f"{k} records cannot be scored; use response "
                                    "(prompt/completion), pair (prompt/chosen/rejected) or rating (prompt/response/score) records")
                kind = k
            rec = RECORD_TYPES[kind].from_obj(obj)
        except FieldError as e:
            raise DataError(path, line, e.field, e.problem) from None
        for field, _, _ in TARGETS[kind]:
            text = getattr(rec, field)
            if not text or not text.strip():
                raise DataError(path, line, field, "empty response: it cannot be scored (drop or fill it first)")
        items.append((line, obj, rec))
    if kind is None:
        raise DataError(path, None, None, "no records to score")
    return kind, items


def score_file(spec: str, inp: Path, out: Path, *, chunk: int = 8, progress: bool = True, scorer=None) -> dict:
    """Score every record of ``inp`` into ``out`` (resumable). Returns counts."""
    from ..data.io import JsonlAppender
    from ..rewards import load_scorer
    from .common import progress as make_progress

    if inp.resolve() == out.resolve():
        raise FinealignError(f"{out}: the output must differ from the input")
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise FinealignError(f"{out}: the output is written as JSONL; name it .jsonl")
    kind, items = _load_items(inp)
    targets = TARGETS[kind]
    added = {o for _, o, _ in targets} | {d for _, _, d in targets}
    in_keys = _OccurrenceKey(added)
    keys = [in_keys(obj) for _, obj, _ in items]
    scorer = scorer or load_scorer(spec)
    details = getattr(scorer, "score_details", None)
    written = 0
    with JsonlAppender(out, key=_OccurrenceKey(added)) as app:
        todo = [i for i, k in enumerate(keys) if k not in app]
        skipped = len(items) - len(todo)
        with make_progress(disable=not progress) as bar:
            task = bar.add_task("scoring", total=len(items), completed=skipped, info="")
            for s in range(0, len(todo), chunk):
                idx = todo[s: s + chunk]
                prompts = [items[i][2].prompt for i in idx for _ in targets]
                texts = [getattr(items[i][2], f) for i in idx for f, _, _ in targets]
                try:
                    res = details(prompts, texts) if details else scorer.score(prompts, texts)
                except FinealignError as e:
                    bad = getattr(e, "index", None)
                    if bad is not None:
                        line = items[idx[bad // len(targets)]][0]
                        raise DataError(inp, line, targets[bad % len(targets)][0], str(e)) from None
                    raise
                for j, i in enumerate(idx):
                    obj = dict(items[i][1])
                    for t, (_, field, dims_field) in enumerate(targets):
                        r = res[j * len(targets) + t]
                        obj[field] = float(r.score) if details else float(r)
                        if details:
                            obj[dims_field] = r.dims
                    app.append(obj)
                    written += 1
                bar.update(task, advance=len(idx))
    stats = getattr(scorer, "stats", None)
    return {"kind": kind, "records": len(items), "written": written, "skipped": skipped,
            "truncated": getattr(stats, "truncated", 0)}


def register(app, **_):
    @app.command("score")
    def score_cmd(
        inp: Path = typer.Argument(..., metavar="IN", help="Response, pair or rating records (.jsonl/.json/.csv/.parquet)."),
        out: Path = typer.Argument(..., metavar="OUT", help="Output JSONL; a rerun resumes it."),
        scorer: str = typer.Option(..., "--scorer", "-s",
                                   help="Scorer spec, e.g. flr:smollm2-135m-instruct,mode=pmi | direct:MODEL | seqcls:PATH | length."),
        chunk: int = typer.Option(8, "--chunk", help="Records scored (and appended) per step."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        """Add reward scores (and FLR's per-dimension scores) to every record of IN, into OUT."""
        from .common import console, out as stdout

        if chunk < 1:
            raise FinealignError("--chunk must be >= 1")
        console.print(f"loading scorer {scorer} ...")
        st = score_file(scorer, inp, out, chunk=chunk, progress=not quiet)
        stdout.print(f"{st['kind']} records: {st['records']}  scored now: {st['written']}  "
                     f"already done: {st['skipped']}  truncated contexts: {st['truncated']}  -> {out}",
                     soft_wrap=True, highlight=False)
