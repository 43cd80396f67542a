"""``generate``, ``score``, ``label`` and ``eval-rm`` on an engine (``--engine local|ray``), sharded.

Scoring verbs. The verb's own single-process function runs three times, and only the middle step
touches a model:

1. a *dry run* on a scratch copy of the output's current state (the output or the score cache, with
   its manifest) with a ``RecordingScorer``: it records every scorer call the function makes (which
   responses, in which batches, only the ones still to score) and performs the function's own
   checks, the manifest's refusal to resume under other settings included, before anything runs;
2. the recorded calls are cut into shards of consecutive calls that the engine's workers replay with
   the real scorer (``ScoreJob``), shard by shard, resumable;
3. the *final run* of the same function on the real output, with a ``PrecomputedScorer`` answering
   every call from the shards' results: the output (and score cache) is written by the ordinary code.

Because the workers make exactly the single-process calls, in the same batches, the output is
byte-identical to the single-process output. ``generate`` has no scorer to stand in for: it is the generate job
(``generate_job.run_generate_job``) with ``ShardedBackend``, whose shards are chunks of prompts (generate's
own ``max(1, batch_size // k)``), sampled by ``generation.TransformersBackend`` in the workers; the job
appends their lines in order. The shard folder (``OUT.shards``,
``OUT/shards``) is removed once the output is complete.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from ..data.records import Prompt
from ..rewards.base import Scorer
from .shards import (EngineArgs, EventFn, LocalRunner, ShardStore, default_shard_size, fingerprint, locate_failure,
                     plan_shards)
from .ray_engine import RayRunner


def open_engine(args: EngineArgs):
    """A context manager running shards: ``LocalRunner`` or, for ``engine="ray"``, a connected
    ``RayRunner`` (connecting first, so an unreachable cluster fails before anything is written)."""
    if args.engine == "ray":
        return RayRunner(address=args.ray_address, workers=args.workers)
    return LocalRunner()


ProgressFn = Callable[[int, int, str], None]  # on_progress(done, total, info)


class ScoreRequest(NamedTuple):
    """One response to score, and where it comes from (``file:line: field``) for error messages."""

    prompt: Prompt
    text: str
    origin: str


class Detail(NamedTuple):
    """What ``score_details`` returns per response (FLR: ``dims`` = per-dimension scores)."""

    score: float
    dims: dict


def _content_key(prompt: Prompt, text: str) -> str:
    return json.dumps([prompt, text], sort_keys=True, ensure_ascii=False)


# ----------------------------------------------------------------------------------------- jobs


@dataclass
class ScoreJob:
    """Replay recorded scorer calls with the scorer ``spec``: per call, ``score_details`` when the
    scorer has it (FLR's per-dimension scores), else ``score``. A shard is a list of calls."""

    spec: str
    per_unit: int | None = None  # a unit is a call: its row count varies

    @property
    def device(self) -> str:
        from ..rewards import parse_spec

        return str(parse_spec(self.spec).options.get("device", "auto"))

    def setup(self) -> None:
        from ..rewards import load_scorer

        self._scorer = load_scorer(self.spec)

    def run(self, payload: Sequence[Sequence[ScoreRequest]]) -> tuple[list[dict], dict]:
        scorer = self._scorer
        details = getattr(scorer, "score_details", None)
        call = details or scorer.score
        stats = getattr(scorer, "stats", None)
        before = getattr(stats, "truncated", 0)
        rows: list[dict] = []
        for part in payload:
            try:
                res = call([r.prompt for r in part], [r.text for r in part])
            except Exception as e:  # noqa: BLE001 - named by locate_failure
                raise locate_failure(lambda one: call([one[0].prompt], [one[0].text]), list(part),
                                     [r.origin for r in part], e) from None
            rows += [{"score": float(r.score), "dims": r.dims} if details else {"score": float(r)} for r in res]
        return rows, {"truncated": getattr(stats, "truncated", 0) - before}


@dataclass
class GenerateJob:
    """Sample ``k`` completions for the prompts of a shard (whole chunks of ``max(1, batch_size // k)``
    prompts) with ``generation.TransformersBackend``; its rows are generate's records."""

    model: str
    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int
    batch_size: int
    dtype: str = "float32"
    device: str = "auto"
    source: str = "prompts"
    per_unit: int | None = None  # a unit is a chunk of prompts: its row count varies

    def setup(self) -> None:
        from ..models import load_model

        self._lm, self._tok = load_model(self.model, dtype=self.dtype, device=self.device)

    def run(self, payload: Sequence) -> tuple[list[dict], dict]:
        from ..generate_job import GENERATE, Chunk, Sampling
        from ..generation import TransformersBackend

        sampling = Sampling(self.temperature, self.top_p, self.max_new_tokens, self.seed)
        backend = TransformersBackend((self._lm, self._tok), k=self.k, sampling=sampling, batch_size=self.batch_size,
                                      model_name=self.model)  # the name a single-process run records
        per = max(1, self.batch_size // self.k)
        items = list(payload)
        try:
            produced = list(backend.produce([Chunk(items[i: i + per], []) for i in range(0, len(items), per)], None))
        except Exception as e:  # noqa: BLE001 - named by locate_failure
            raise locate_failure(self._probe, items, [f"{self.source}: prompt {p.id}" for p in items], e) from None
        rows = [GENERATE.line(GENERATE.rid(r.item.id, r.sample), r, self.model, {}) for b in produced for r in b.rows]
        return rows, {"new_tokens": sum(b.new_tokens for b in produced), "seconds": sum(b.seconds for b in produced),
                      "empty": sum(not o["completion"].strip() for o in rows),
                      "truncated": sum(o["meta"]["finish_reason"] == "length" for o in rows)}

    def _probe(self, items) -> None:
        from ..generation import generate_completions

        generate_completions(self._lm, self._tok, [p.prompt for p in items], n=1, max_new_tokens=1, temperature=0,
                             prompt_ids=[p.id for p in items])


class ShardedBackend:
    """The generate job's backend on an engine (``generate_job.run_generate_job``): the chunks still to write
    are cut into shards of chunks, sampled by ``GenerateJob`` on the engine's workers (``OUT.shards`` keeps
    finished shards for a rerun; removed once their rows are written), and handed back in order."""

    name = "transformers"

    def __init__(self, job: GenerateJob, engine: EngineArgs, folder: Path, *, fresh: bool = False,
                 on_event: EventFn | None = None):
        self.job, self.engine, self.folder, self.fresh, self.on_event = job, engine, Path(folder), fresh, on_event
        self.fingerprint_model = self.model_name = job.model
        self.dtype, self.rows_per_chunk, self.meta = job.dtype, job.batch_size, {}

    def __enter__(self) -> "ShardedBackend":
        self._engine = open_engine(self.engine)  # connected first: an unreachable cluster fails before any write
        self._runner = self._engine.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        return self._engine.__exit__(*exc)

    def produce(self, chunks: Sequence, pulse) -> Any:
        """One batch: every row of the chunks (each chunk decoded whole), after all shards ran."""
        from ..generate_job import Produced, rows_of_records

        j = self.job
        if self.fresh:
            shutil.rmtree(self.folder, ignore_errors=True)
        per_chunk = max(1, j.batch_size // j.k)
        shards = plan_shards(len(chunks), self.engine.shard_size and max(1, self.engine.shard_size // per_chunk))
        size_of = lambda i: sum(len(c.todo) for c in chunks[shards[i].start: shards[i].end])  # noqa: E731

        def event(kind: str, info: dict) -> None:
            if kind == "shard" and pulse is not None:
                pulse.report(size_of(info["shard"]), f"shard {info['shard']} in {info['seconds']:.1f} s")
            if self.on_event:
                self.on_event(kind, info)

        store = ShardStore(self.folder, fingerprint("generate", j.model, j.k, j.temperature, j.top_p,
                                                    j.max_new_tokens, j.seed, j.batch_size, j.dtype), shards,
                           lambda s: [[(p.id, p.prompt) for p in c.items] for c in chunks[s.start: s.end]],
                           describe={"verb": "generate", "model": j.model,
                                     "prompts": sum(len(c.items) for c in chunks)})
        self._runner.run(j, store, lambda s: [p for c in chunks[s.start: s.end] for p in c.items], event)
        rows, stats = store.results()
        yield Produced(rows_of_records(rows, [p for c in chunks for p in c.items]),
                       int(stats.get("new_tokens", 0)), float(stats.get("seconds", 0.0)))
        store.remove()


# ------------------------------------------------------------------------- recorded and precomputed


class RecordingScorer(Scorer):
    """The dry run's scorer: answers every call with zeros and records it (``calls``: one list of
    (prompt, response) per call, in call order)."""

    name = "recording"

    def __init__(self):
        self.calls: list[list[tuple[Prompt, str]]] = []

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        self.calls.append(list(zip(prompts, responses)))
        return [0.0] * len(responses)

    def score_details(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Detail]:
        return [Detail(s, {}) for s in self.score(prompts, responses)]


class PrecomputedScorer(Scorer):
    """A scorer answering from results computed elsewhere (shards), matched by (prompt, response).

    Repeated identical requests get their results in order of occurrence (the last one stays). A
    request with no result is scored by the real scorer ``fallback`` (a spec, loaded on first need;
    ``computed`` counts them), so an unplanned call still gets the right number.
    """

    name = "precomputed"

    def __init__(self, requests: Sequence[ScoreRequest], rows: Sequence[dict], fallback: str, truncated: int = 0):
        from ..rewards.lm_common import ScoreStats

        self._by: dict[str, deque] = defaultdict(deque)
        for r, row in zip(requests, rows):
            self._by[_content_key(r.prompt, r.text)].append(row)
        self._fallback_spec = fallback
        self._fallback = None
        self.stats = ScoreStats(truncated=int(truncated))
        self.computed = 0

    def _rows(self, prompts: Sequence[Prompt], responses: Sequence[str], details: bool) -> list:
        out: list = [None] * len(responses)
        missing = []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            q = self._by.get(_content_key(p, r))
            if q:
                out[i] = q.popleft() if len(q) > 1 else q[0]
            else:
                missing.append(i)
        if missing:
            from ..rewards import load_scorer

            self._fallback = self._fallback or load_scorer(self._fallback_spec)
            fn = getattr(self._fallback, "score_details", None) if details else None
            got = (fn or self._fallback.score)([prompts[i] for i in missing], [responses[i] for i in missing])
            for i, g in zip(missing, got):
                out[i] = {"score": float(g.score), "dims": g.dims} if fn else {"score": float(g)}
            self.computed += len(missing)
        return out

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        return [row["score"] for row in self._rows(prompts, responses, False)]


class PrecomputedDetails(PrecomputedScorer):
    """``PrecomputedScorer`` of a scorer with per-dimension details (FLR's ``score_details``)."""

    def score_details(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Detail]:
        return [Detail(row["score"], row.get("dims", {})) for row in self._rows(prompts, responses, True)]


def _events(on_progress: ProgressFn | None, on_event: EventFn | None, total: int,
            size_of: Callable[[int], int], done: int = 0) -> EventFn:
    """An ``on_event`` that also drives ``on_progress(done, total, info)`` in the verb's units."""
    state = {"done": done}
    if on_progress:
        on_progress(done, total, "")

    def event(kind: str, info: dict) -> None:
        if kind == "shard" and on_progress:
            state["done"] += size_of(info["shard"])
            on_progress(state["done"], total, f"shard {info['shard']} in {info['seconds']:.1f} s")
        if on_event:
            on_event(kind, info)

    return event


def _origin(origins: dict[str, str], prompt: Prompt, text: str) -> str:
    return origins.get(_content_key(prompt, text)) or f"the response starting {text[:50]!r}"


def dry_run_calls(run: Callable[[Scorer, Path], Any], state: Sequence[Path] = ()) -> list[list[tuple[Prompt, str]]]:
    """The scorer calls ``run(scorer, scratch_dir)`` makes, with copies of the ``state`` files (an
    output, a score cache, their manifests; missing ones skipped) in the scratch folder first."""
    with tempfile.TemporaryDirectory(prefix="finealign-plan-") as d:
        for p in state:
            if Path(p).is_file():
                shutil.copy2(p, Path(d) / Path(p).name)
        rec = RecordingScorer()
        run(rec, Path(d))
        return rec.calls


def sharded_calls(spec: str, calls: Sequence[Sequence[tuple[Prompt, str]]], origins: dict[str, str], *,
                  folder: Path, engine: EngineArgs, on_progress: ProgressFn | None = None,
                  on_event: EventFn | None = None, fresh: bool = False) -> tuple[PrecomputedScorer, ShardStore]:
    """Replay ``calls`` with the scorer ``spec`` shard by shard on ``engine``; a ``PrecomputedScorer``
    of the results and the store (remove it once the output is written). ``fresh`` deletes earlier
    shards first. Raises ``ShardFailures`` when some shards failed (the others are kept for the rerun)
    and ``FinealignError`` when the engine is unreachable."""
    reqs = [[ScoreRequest(p, t, _origin(origins, p, t)) for p, t in c] for c in calls]
    n = sum(len(c) for c in reqs)
    per_call = max(1, max((len(c) for c in reqs), default=1))
    shards = plan_shards(len(reqs), math.ceil((engine.shard_size or default_shard_size(n)) / per_call))
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    events = _events(on_progress, on_event, n, lambda i: sum(len(c) for c in reqs[shards[i].start:shards[i].end]))
    with open_engine(engine) if shards else LocalRunner() as runner:
        store = ShardStore(folder, fingerprint("score", spec), shards,
                           lambda s: [[(r.prompt, r.text) for r in c] for c in reqs[s.start:s.end]],
                           describe={"verb": "score", "scorer": spec, "responses": n})
        runner.run(ScoreJob(spec), store, lambda s: reqs[s.start:s.end], events)
    rows, stats = store.results()
    cls = PrecomputedDetails if rows and "dims" in rows[0] else PrecomputedScorer
    return cls([r for c in reqs for r in c], rows, spec, stats.get("truncated", 0)), store


def _finish(pre: PrecomputedScorer, store: ShardStore) -> None:
    """Remove the shards once the output is written; warn when the driver had to score anything."""
    store.remove()
    if pre.computed:
        import warnings

        warnings.warn(f"{pre.computed} responses were not in the planned calls and were scored in the driver",
                      stacklevel=3)


def _record_origins(path: Path) -> dict[str, str]:
    """``file:line: field`` of every response text of a record file, by (prompt, text)."""
    from ..data.io import iter_objects
    from ..data.records import RECORD_TYPES, FieldError, detect_kind

    out: dict[str, str] = {}
    for line, obj in iter_objects(path):
        try:
            rec = RECORD_TYPES[detect_kind(obj)].from_obj(obj)
        except (FieldError, KeyError):
            continue  # the verb's own validation reports it
        for field in ("completion", "response", "chosen", "rejected"):
            text = getattr(rec, field, None)
            if isinstance(text, str):
                out.setdefault(_content_key(rec.prompt, text), f"{path}:{line}: {field}")
    return out


def _state(*paths: Path) -> list[Path]:
    """The files that hold a run's resumable state: each path and its manifest."""
    from ..data.manifest import manifest_path

    return [q for p in paths for q in (Path(p), manifest_path(p))]


# ----------------------------------------------------------------------------------------- verbs


def score_file_sharded(spec: str, inp: str | Path, out: str | Path, *, engine: EngineArgs,
                       on_progress: ProgressFn | None = None, on_event: EventFn | None = None, **kw) -> dict:
    """``finealign score`` on an engine: ``rewards.score_file.score_file(spec, inp, out, **kw)``'s
    output and counts (``kw``: ``chunk``, ``max_chars``, ``overwrite``, ...)."""
    from ..rewards.score_file import score_file

    inp, out = Path(inp), Path(out)
    calls = dry_run_calls(lambda rec, d: score_file(spec, inp, d / out.name, scorer=rec, **kw),
                          [] if kw.get("overwrite") else _state(out))
    pre, store = sharded_calls(spec, calls, _record_origins(inp), folder=out.with_name(out.name + ".shards"),
                               engine=engine, on_progress=on_progress, on_event=on_event,
                               fresh=bool(kw.get("overwrite")))
    st = score_file(spec, inp, out, scorer=pre, **kw)
    _finish(pre, store)
    return st


def label_file_sharded(scorer_spec: str, src: str | Path, dst: str | Path, cfg, *, engine: EngineArgs,
                       on_progress: ProgressFn | None = None, on_event: EventFn | None = None, **kw):
    """``finealign label`` on an engine: ``train.labeling.label_file``'s output and stats."""
    from ..train.labeling import label_file

    src, dst = Path(src), Path(dst)
    cache = dst.with_name(dst.name + ".scores.jsonl")
    calls = dry_run_calls(lambda rec, d: label_file(scorer_spec, src, d / dst.name, cfg, scorer=rec, **kw),
                          [] if kw.get("overwrite") else _state(cache))
    pre, store = sharded_calls(scorer_spec, calls, _record_origins(src), folder=dst.with_name(dst.name + ".shards"),
                               engine=engine, on_progress=on_progress, on_event=on_event,
                               fresh=bool(kw.get("overwrite")))
    st = label_file(scorer_spec, src, dst, cfg, scorer=pre, **kw)
    _finish(pre, store)
    return st


def run_eval_sharded(cfg, *, engine: EngineArgs, on_progress: ProgressFn | None = None,
                     on_event: EventFn | None = None):
    """``finealign eval rm`` on an engine: ``eval.rm_eval.run_eval``'s result (and files)."""
    from ..eval.benchmarks import load_benchmark
    from ..eval.rm_eval import run_eval

    bench = load_benchmark(cfg.benchmark, limit=cfg.limit, sample_seed=cfg.sample_seed, data_dir=cfg.data_dir)
    out, fresh = Path(cfg.out), bool(getattr(cfg, "overwrite", False))
    state = [] if fresh else _state(out / "scores.jsonl")
    calls = dry_run_calls(lambda rec, d: _eval_in(run_eval, cfg, bench, rec, d / "eval", state))
    origins: dict[str, str] = {}
    for i, r in enumerate(bench.items):
        for f in ("chosen", "rejected", "response", "completion"):
            if isinstance(getattr(r, f, None), str):
                origins.setdefault(_content_key(r.prompt, getattr(r, f)), f"{bench.name} item {i + 1}: {f}")
    pre, store = sharded_calls(cfg.scorer, calls, origins, folder=out / "shards", engine=engine,
                               on_progress=on_progress, on_event=on_event, fresh=fresh)
    res = run_eval(cfg, scorer=pre, bench=bench)
    _finish(pre, store)
    return res


def _eval_in(run_eval, cfg, bench, rec, target: Path, state: Sequence[Path]):
    """``run_eval`` into the scratch folder ``target`` holding copies of the ``state`` files."""
    import dataclasses

    target.mkdir()
    for p in state:
        if p.is_file():
            shutil.copy2(p, target / p.name)
    return run_eval(dataclasses.replace(cfg, out=target), scorer=rec, bench=bench)


def generate_file_sharded(model: str, prompts_path: str | Path, out_path: str | Path, *, k: int = 4,
                          temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 256, seed: int = 0,
                          batch_size: int = 8, dtype: str = "float32", device: str = "auto", engine: EngineArgs,
                          overwrite: bool = False, on_progress: ProgressFn | None = None,
                          on_event: EventFn | None = None):
    """``finealign generate`` on an engine: the generate job (``generate_job.run_generate_job``) with
    ``ShardedBackend``, so the lines ``generation.generate_file`` would write, in its order, are appended
    to ``out_path`` (ids already there, of any engine, are kept). Returns ``GenerateStats``."""
    from ..generate_job import Sampling, run_generate_job

    job = GenerateJob(model, k, temperature, top_p, max_new_tokens, seed, batch_size, dtype, device,
                      source=str(prompts_path))
    folder = Path(out_path).with_name(Path(out_path).name + ".shards")
    backend = ShardedBackend(job, engine, folder, fresh=overwrite, on_event=on_event)
    return run_generate_job(backend, prompts_path, out_path, k=k, sampling=Sampling(temperature, top_p,
                            max_new_tokens, seed), overwrite=overwrite, on_progress=on_progress)
