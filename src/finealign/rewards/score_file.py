"""Score every record of a file with any scorer (``finealign score``'s library function).

Response records (``prompt``/``completion``) get ``score``; ``prompt``/``response`` records (no
human ``score``) get ``reward``; pair records get ``score_chosen`` and ``score_rejected``; rating
records (whose ``score`` is the human rating) get ``reward``; every record gets ``scorer``.
Empty responses are scored as they are and counted. An FLR
scorer also adds its per-dimension scores (``flr_dims``, ``flr_dims_chosen``, ...). All other
fields are kept. The whole input is validated before anything is written; the output is appended
record by record, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import EngineArgs, positive, setting
from ..errors import ConfigError, DataError, FinealignError


def _window(v) -> str | None:
    return None if v >= 8 else f"expected at least 8 tokens, got {v}"


@dataclass(kw_only=True)
class ScoreConfig(EngineArgs):
    """Add reward scores (and FLR's per-dimension scores) to every record of IN, into OUT."""

    input: str = setting(None, reads="file", keyed=True, positional=True, required=True, metavar="IN",
                         help="Response, pair or rating records (.jsonl/.json/.csv/.parquet).")
    out: str = setting(None, identity=False, positional=True, required=True, metavar="OUT",
                       help="Output JSONL; a rerun resumes it.")
    scorer: str = setting(None, reads="scorer", short="-s", required=True,
                          help="Scorer spec, e.g. flr:smollm2-135m-instruct,mode=pmi "
                               "| direct:MODEL | seqcls:PATH | length.")
    chunk: int = setting(8, identity=False, check=positive, help="Records scored (and appended) per step.")
    max_length: int | None = setting(None, check=_window,
                                     help="Token window of the scorer (default: the model's); longer inputs lose their "
                                          "oldest tokens (docs/long-inputs.md).")
    max_chars: int | None = setting(None, check=positive, help="Cut each response to its first N characters before "
                                                               "scoring (CPU budgets; the records keep their text).")
    overwrite: bool = setting(False, identity=False,
                              help="Start afresh instead of resuming into OUT (a rerun with another scorer, or "
                                   "a changed model, is refused without it).")

    def validate(self):
        if self.max_length is not None and self.scorer and "max_length=" in self.scorer:
            raise ConfigError("max_length", f"the scorer spec {self.scorer!r} sets max_length already")

    def scorer_spec(self) -> str:
        """The scorer spec with ``,max_length=N`` added (the scorer's token window is part of the scorer:
        an output scored with another window does not resume)."""
        return self.scorer if self.max_length is None else f"{self.scorer},max_length={self.max_length}"


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


def targets_of(kind: str, items) -> list[tuple[str, str, str]]:
    """``[(text attribute, output field, dims field)]`` of a file's records: ``TARGETS[kind]``, except
    that response records read from ``response`` (no ``completion``) get ``reward``, so the output
    does not read as rating records."""
    if kind == "response" and items and "completion" not in items[0][1]:
        return [("completion", "reward", "flr_dims")]
    return TARGETS[kind]


def _load_items(path: Path):
    """Validated ``(line, raw object, record)`` of every record, and the record kind. A response
    record's text is its ``completion`` or its ``response``; empty responses are scored as they are.
    """
    from ..data.io import iter_objects
    from ..data.records import RECORD_TYPES, FieldError, detect_kind

    kind, items = None, []
    for line, obj in iter_objects(path):
        try:
            k = detect_kind(obj)
            if kind is None:
                if k not in TARGETS:
                    raise DataError(path, line, None, f"{k} records cannot be scored: score reads the field "
                                    "`completion` or `response` (responses), `chosen` and `rejected` (pairs), or "
                                    f"`response` with its `score` (ratings); this record has {', '.join(sorted(obj))}")
                kind = k
            rec = RECORD_TYPES[kind].from_obj(obj)
        except FieldError as e:
            raise DataError(path, line, e.field, e.problem) from None
        items.append((line, obj, rec))
    if kind is None:
        raise DataError(path, None, None, "no records to score")
    return kind, items


def _tie_output(spec: str, out: Path, *, max_chars: int | None, overwrite: bool, check: bool) -> None:
    """Check the spec (``check``: a bad one fails before anything is written), then tie ``out`` to what scores
    it (``data.manifest``): the identity fields of ``ScoreConfig`` (``data.identity.resume_identity``)."""
    from ..data.identity import resume_identity
    from ..data.manifest import prepare_output
    from .base import check_spec, parse_spec, scorer_fingerprint

    if check:
        check_spec(spec)
    window = parse_spec(spec).options.get("max_length")  # ScoreConfig folds --max-length into the spec
    settings = resume_identity(ScoreConfig, {"scorer": scorer_fingerprint(spec), "max_chars": max_chars,
                                             "max_length": int(window) if window else None})
    prepare_output(out, "score", settings, overwrite=overwrite)


def _refuse_stale(out: Path, inp: Path, stale: set) -> None:
    """Records are keyed by their content, so a changed or removed input record would stay behind in ``out``:
    refuse to resume when ``out`` holds any (``stale``: their keys). Raises ``FinealignError``."""
    if stale:
        raise FinealignError(f"{out}: cannot resume, it holds {len(stale)} scored record(s) that are not in {inp} "
                             "(changed or removed since they were scored); rerun with --overwrite to start "
                             "afresh, or choose another output")


def score_file(spec: str, inp: Path, out: Path, *, chunk: int = 8, scorer=None,
               on_progress: Callable[[int, int, str], None] | None = None, overwrite: bool = False,
               max_chars: int | None = None) -> dict:
    """Score every record of ``inp`` into ``out`` (JSONL, resumable). Returns counts: ``kind``,
    ``records``, ``written`` (now), ``skipped`` (already in ``out``), ``truncated`` (contexts cut),
    ``empty`` (empty responses scored now).

    ``out`` is tied to the scorer (``data.manifest``: its spec and a fingerprint of its files): a
    rerun with another scorer, or with the same spec whose model changed, refuses to resume;
    ``overwrite`` starts afresh. Every output record carries ``scorer``: the spec that scored it.

    ``max_chars``: each response is cut to its first ``max_chars`` characters before scoring (the
    records keep their full text; the setting is part of the output's identity). Inputs longer than
    the scorer's window lose their oldest tokens in the scorer (counted in ``truncated``;
    docs/long-inputs.md).

    ``on_progress(done, total, info)`` is called with records done (skipped ones included) once
    before the first chunk and after each chunk. Raises ``DataError`` (``path:line: field:
    problem``) for a bad input record and ``FinealignError`` for a bad output path.
    """
    from ..data.io import JsonlAppender
    from . import load_scorer

    inp, out = Path(inp), Path(out)
    if inp.resolve() == out.resolve():
        raise FinealignError(f"{out}: the output must differ from the input")
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise FinealignError(f"{out}: the output is written as JSONL; name it .jsonl")
    kind, items = _load_items(inp)
    targets = targets_of(kind, items)
    added = {o for _, o, _ in targets} | {d for _, _, d in targets} | {"scorer"}
    in_keys = _OccurrenceKey(added)
    keys = [in_keys(obj) for _, obj, _ in items]
    _tie_output(spec, out, max_chars=max_chars, overwrite=overwrite, check=scorer is None)
    if scorer is None and not (out.is_file() and out.stat().st_size):
        scorer = load_scorer(spec)  # nothing to resume: a scorer that fails to load leaves no output file
    empty = 0
    written = 0
    with JsonlAppender(out, key=_OccurrenceKey(added)) as app:
        _refuse_stale(out, inp, app.done - set(keys))
        todo = [i for i, k in enumerate(keys) if k not in app]
        skipped = len(items) - len(todo)
        scorer = scorer or (load_scorer(spec) if todo else None)
        details = getattr(scorer, "score_details", None)
        if on_progress is not None:
            on_progress(skipped, len(items), "")
        for s in range(0, len(todo), chunk):
            idx = todo[s: s + chunk]
            prompts = [items[i][2].prompt for i in idx for _ in targets]
            texts = [getattr(items[i][2], f)[:max_chars] for i in idx for f, _, _ in targets]
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
                obj["scorer"] = spec  # every scored record says which scorer scored it
                empty += sum(not getattr(items[i][2], f).strip() for f, _, _ in targets)
                for t, (_, field, dims_field) in enumerate(targets):
                    r = res[j * len(targets) + t]
                    obj[field] = float(r.score) if details else float(r)
                    if details:
                        obj[dims_field] = r.dims
                app.append(obj)
                written += 1
            if on_progress is not None:
                on_progress(skipped + written, len(items), "")
    stats = getattr(scorer, "stats", None)
    return {"kind": kind, "records": len(items), "written": written, "skipped": skipped,
            "truncated": getattr(stats, "truncated", 0), "empty": empty}


