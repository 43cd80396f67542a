"""Scoring with a cache: score (prompt, response) units once, keyed by content, resumable on disk.

A *unit* is one (prompt, response) to score, keyed by a hash of its content, so a response shared
by several items (AlpacaEval's reference outputs, several labelings of one file) is scored once.
Scores are cached in a JSONL file (a ``JsonlAppender`` keyed by scorer spec + unit key): a killed
run resumes where it stopped. Used by reward evaluation (``eval.rm_eval``) and preference labeling
(``train.labeling``). Stages of a recipe that score the same responses with the same scorer share one
cache file (:func:`shared_cache_path`), so the second stage scores nothing (the quickstart's
``label-dpo`` and ``label-kto`` stages: one FLR pass instead of two).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, NamedTuple

from ..data.io import JsonlAppender
from ..data.records import Prompt
from ..errors import FinealignError


class Unit(NamedTuple):
    """One (prompt, response) to score; ``key`` hashes the prompt and the (cut) response."""

    key: str
    prompt: Prompt
    response: str


def unit(prompt: Prompt, response: str, max_chars: int | None = None) -> Unit:
    """The unit of (prompt, response), the response cut to its first ``max_chars`` characters."""
    text = response if max_chars is None else response[:max_chars]
    h = hashlib.sha1(json.dumps([prompt, text], ensure_ascii=False).encode("utf-8")).hexdigest()[:20]
    return Unit(h, prompt, text)


def shared_cache_path(folder: str | Path, spec: str) -> Path:
    """The score cache in ``folder`` that every stage scoring with ``spec`` shares.

    Named by a hash of the spec and its fingerprint (``rewards.base.scorer_fingerprint``: the model
    files behind it), so the same spec over a changed model gets a fresh file instead of a refusal;
    entries inside are keyed by unit (prompt + cut response), so only equal responses share scores."""
    from .base import scorer_fingerprint

    ident = json.dumps({"spec": spec, "fingerprint": scorer_fingerprint(spec)}, sort_keys=True, default=str)
    return Path(folder) / f"scores-{hashlib.sha256(ident.encode('utf-8')).hexdigest()[:16]}.jsonl"


def cached_count(cache: Path, spec: str, keys: set[str]) -> int:
    """How many of ``keys`` the cache file already holds for ``spec`` (0 when there is no file)."""
    if not Path(cache).exists():
        return 0
    seen = set()
    for line in Path(cache).read_text(encoding="utf-8").splitlines():
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if isinstance(o, dict) and o.get("scorer") == spec and o.get("key") in keys:
            seen.add(o["key"])
    return len(seen)


class LazyScorer:
    """A scorer loaded on its first ``score`` call (``make()`` builds it): a pass whose scores are all
    cached never loads the model."""

    def __init__(self, make: Callable[[], object]):
        self._make, self._scorer = make, None

    @property
    def loaded(self) -> bool:
        return self._scorer is not None

    def score(self, prompts, responses):
        if self._scorer is None:
            self._scorer = self._make()
        return self._scorer.score(prompts, responses)


def score_units(scorer, spec: str, units: list[Unit], cache: Path | None, *, batch_size: int = 8,
                on_progress: Callable[[int], None] | None = None, overwrite: bool = False) -> dict[str, float]:
    """Scores of the distinct ``units`` by key, reading and extending the cache file ``cache``.

    ``scorer`` is any ``Scorer``; ``spec`` names it in the cache. The cache's manifest
    (``data.manifest``, merged per spec) records each spec's fingerprint: a spec whose model or
    token RM changed since its scores were cached refuses to reuse them; ``overwrite`` empties the
    cache first. Empty responses are scored as they are. ``on_progress(n)`` is called after every
    batch with the number of units newly scored. Raises ``FinealignError`` when the scorer returns
    the wrong number of scores or a non-finite one, or the cache was made by another scorer.
    """
    todo: dict[str, Unit] = {}
    for u in units:
        todo.setdefault(u.key, u)
    scores: dict[str, float] = {}
    app = None
    if cache is not None:
        from ..data.manifest import prepare_output
        from .base import scorer_fingerprint

        prepare_output(cache, "score-cache", {spec: scorer_fingerprint(spec)}, merge=True, overwrite=overwrite)
        app = JsonlAppender(cache, key=lambda o: (o["scorer"], o["key"]))
        for line in cache.read_text(encoding="utf-8").splitlines():
            if line.strip():
                o = json.loads(line)
                if o.get("scorer") == spec and o.get("key") in todo:
                    scores[o["key"]] = float(o["score"])
    pending = [u for k, u in todo.items() if k not in scores]
    if on_progress:
        on_progress(0)
    try:
        for i in range(0, len(pending), batch_size):
            batch = pending[i:i + batch_size]
            vals = scorer.score([u.prompt for u in batch], [u.response for u in batch])
            if len(vals) != len(batch):
                raise FinealignError(f"scorer {spec!r} returned {len(vals)} scores for {len(batch)} responses")
            for u, v in zip(batch, vals):
                v = float(v)
                if not math.isfinite(v):
                    raise FinealignError(f"scorer {spec!r} returned a non-finite score ({v}) for unit {u.key}")
                scores[u.key] = v
                if app is not None:
                    app.append({"scorer": spec, "key": u.key, "score": v})
            if on_progress:
                on_progress(len(batch))
    finally:
        if app is not None:
            app.close()
    return scores
