"""One resumable generate job: every writer of sampled responses goes through ``run_generate_job``.

``finealign generate`` (the transformers backend, ``generation.generate_file``; the vLLM backend,
``generation_vllm.vllm_generate_file``; the local and Ray engines, ``engine.sharded.generate_file_sharded``)
and the answers ``eval winrate`` generates (``eval.winrate_run``) differ only in how completions are
produced. The job owns the rest, once:

a. the checks: sampling settings, ``k`` and batch size, an output that is not the prompts file, and the
   output's manifest (``tie_generate_output``: a rerun with another model or other sampling settings is
   refused, naming them);
b. what is already done: the record ids in the output (a torn last line dropped, ``data.io.JsonlAppender``);
c. the appends: records in prompt order, one flushed line each, only the ids not yet written;
d. progress: ``on_progress(done, total, info)`` before the first chunk, after each produced batch, and
   (``HEARTBEAT_S``) while a long chunk decodes;
e. the final counts (``GenerateStats``).

A backend is a context manager (entered before anything is written: a missing vLLM or an unreachable Ray
cluster fails first) with ``name`` (recorded in the manifest), ``meta`` (extra ``meta`` fields of every
line), ``rows_per_chunk``, ``model_name`` (``meta.model``), ``fingerprint_model`` and ``dtype`` (what the
manifest fingerprints), and ``produce(chunks, pulse)``: for chunks of consecutive prompts that still have
rows to write, yield ``Produced`` batches of ``Row`` (prompt, sample, completion, prompt tokens cut). The
prompts are cut into fixed chunks of ``max(1, rows_per_chunk // k)``, so a backend that decodes a chunk
whole computes in a resumed run exactly what it computes in an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .config import EngineArgs, ModelLoadArgs, RunArgs, SamplingArgs, positive, setting
from .data.prompts import PromptItem, read_prompts
from .errors import ConfigError, FinealignError

__all__ = ["ANSWERS", "BACKENDS", "FINISH_LENGTH", "FINISH_STOP", "GENERATE", "HEARTBEAT_S", "Chunk", "Completion",
           "GenerateConfig", "GenerateStats", "Layout", "Produced", "Pulse", "Row", "Sampling", "check_sampling",
           "checked_generate_inputs", "run_generate_job", "tie_generate_output"]


BACKENDS = ("transformers", "vllm")


@dataclass(kw_only=True)
class GenerateConfig(ModelLoadArgs, SamplingArgs, RunArgs, EngineArgs):
    """Sample K completions per prompt (chat template, batched, resumable) into OUT."""

    prompts: str = setting(None, reads="file", keyed=True, short="-p", required=True,
                           help="Prompt-bearing file (.jsonl/.json/.csv/.parquet).")
    out: str = setting(None, identity=False, short="-o", required=True,
                       help="Output JSONL of responses; a rerun resumes it.")
    k: int = setting(4, short="-k", keyed=True, check=positive, help="Completions per prompt.")
    seed: int = setting(0, help="Base seed; sample j of prompt p is seeded from (seed, p, j).")
    batch_size: int = setting(8, identity=False, check=positive, help="Sequences decoded together.")
    overwrite: bool = setting(False, identity=False,
                              help="Start afresh instead of resuming into OUT (a rerun with another model or "
                                   "sampling setting is refused without it).")
    backend: str = setting("transformers", choices=BACKENDS,
                           help="transformers | vllm (needs vLLM: Linux with a CUDA GPU; greedy text equal, sampled "
                                "rows other draws).")

    def validate(self):
        if self.backend == "vllm" and self.engine == "ray":
            raise ConfigError("backend", "vllm runs on one machine without --engine ray (vLLM shards over its own "
                                         "GPUs)")


FINISH_STOP = "stop"
FINISH_LENGTH = "length"
HEARTBEAT_S = 5.0  # a chunk that decodes longer than this reports its token rate while it runs

ProgressFn = Callable[[int, int, str], None]  # on_progress(done, total, info)


class Completion(NamedTuple):
    """One generated completion: text (special tokens stripped), why it ended, tokens before EOS."""

    text: str
    finish_reason: str  # "stop" (an EOS token) | "length" (max_new_tokens reached)
    n_tokens: int


class Row(NamedTuple):
    """One produced response: sample ``sample`` of prompt ``item``; ``cut``: prompt tokens dropped to fit."""

    item: PromptItem
    sample: int
    completion: Completion
    cut: int = 0


class Chunk(NamedTuple):
    """Consecutive prompts (``items``) and their ``(prompt, sample)`` rows not yet in the output (``todo``)."""

    items: list
    todo: list


@dataclass
class Produced:
    """A batch of rows a backend produced, with the tokens it decoded and the seconds it took."""

    rows: list
    new_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Sampling:
    """The settings that make the samples (all in the output's manifest)."""

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    seed: int = 0


@dataclass(frozen=True)
class GenerateStats:
    """What one generate run did."""

    prompts: int  # prompts in the input file
    responses_written: int  # response lines appended by this run
    skipped: int  # responses already in the output file (a resumed run)
    empty: int  # written completions that are empty or whitespace only (kept in the file)
    truncated: int  # written completions that hit max_new_tokens (finish_reason "length")
    new_tokens: int  # tokens decoded by this run (a regenerated chunk's done rows included)
    seconds: float  # wall time spent decoding
    prompts_cut: int = 0  # prompts of this run cut to fit the window (meta.prompt_cut_tokens on their lines)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------- the lines


def _generate_line(rid: str, row: Row, model: str, meta: dict) -> dict:
    c = row.completion
    m = {"model": model, "finish_reason": c.finish_reason, "n_tokens": c.n_tokens}
    if row.cut:
        m["prompt_cut_tokens"] = row.cut  # the oldest context tokens dropped to fit the window
    p = row.item
    return {"id": rid, "prompt_id": p.id, "sample": row.sample, "prompt": p.prompt, "completion": c.text,
            "meta": {**m, **meta}}


def _answer_line(rid: str, row: Row, model: str, meta: dict) -> dict:
    c, p = row.completion, row.item
    return {"id": rid, "prompt_id": p.id, "prompt": p.prompt, "completion": c.text,
            "meta": {"model": model, "finish_reason": c.finish_reason, "n_tokens": c.n_tokens, **meta}}


@dataclass(frozen=True)
class Layout:
    """How an output names and writes its records, and the verb its manifest records."""

    verb: str
    rid: Callable[[str, int], str]
    line: Callable[[str, Row, str, dict], dict]


GENERATE = Layout("generate", lambda pid, s: f"{pid}:{s}", _generate_line)  # generate's response records
ANSWERS = Layout("eval winrate", lambda pid, s: str(pid), _answer_line)  # eval winrate: one answer per prompt


# --------------------------------------------------------------------------------------- the checks


def check_sampling(temperature: float, top_p: float, max_new_tokens: int, do_sample: bool | None) -> bool:
    """Whether to sample (``do_sample`` None: temperature > 0). Raises ``FinealignError`` for a bad setting."""
    if temperature < 0:
        raise FinealignError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise FinealignError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise FinealignError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample is None:
        return temperature > 0
    if do_sample and temperature == 0:
        raise FinealignError("do_sample=True needs a temperature > 0 (temperature 0 means greedy)")
    return bool(do_sample)


def checked_generate_inputs(prompts_path, out_path, *, k: int, batch_size: int, temperature: float, top_p: float,
                            max_new_tokens: int) -> tuple[list, Path]:
    """The prompts of ``prompts_path`` and ``out_path`` as a Path, after the checks every generate job
    makes: sampling settings, ``k`` and ``batch_size`` >= 1, and an output that is not the prompts file.
    Raises ``FinealignError`` (and ``DataError`` for a bad prompts file)."""
    check_sampling(temperature, top_p, max_new_tokens, None)
    if k < 1 or batch_size < 1:
        raise FinealignError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    items = read_prompts(prompts_path)
    out_path = Path(out_path)
    if out_path.exists() and out_path.resolve() == Path(prompts_path).resolve():
        raise FinealignError(f"{out_path}: the output file must differ from the prompts file")
    return items, out_path


def tie_generate_output(out_path: str | Path, model, *, temperature: float, top_p: float, max_new_tokens: int,
                        seed: int, dtype: str, backend: str = "transformers", overwrite: bool = False,
                        check_only: bool = False, verb: str = "generate", adopt: bool = False) -> None:
    """Tie a generate output to what makes its samples (``data.manifest``): the identity fields of
    ``GenerateConfig`` (``data.identity.resume_identity``; the prompts and ``k`` are keyed: new ones append):
    the model's fingerprint (a spec or a loaded model), the sampling settings, the dtype and the decoding
    backend. Raises
    ``FinealignError`` naming every differing setting when ``out_path`` was made otherwise; ``overwrite``
    deletes it first; ``check_only`` refuses but writes nothing; ``adopt`` records this run's settings for
    an output with no manifest (its caller vouches for it); ``verb``: the verb the manifest names."""
    from .data.identity import resume_identity
    from .data.manifest import prepare_output
    from .models.fingerprint import model_fingerprint
    from .models.loading import DTYPES

    dt = str(dtype).removeprefix("torch.")
    dt = str(DTYPES.get(dt.lower(), dt)).removeprefix("torch.")  # fp32 and float32 are one setting
    settings = resume_identity(GenerateConfig, {
        "model": model_fingerprint(model), "temperature": temperature, "top_p": top_p,
        "max_new_tokens": max_new_tokens, "seed": seed, "dtype": dt, "backend": backend})
    prepare_output(out_path, verb, settings, overwrite=overwrite, check_only=check_only,
                   has_content=False if adopt else None)


# --------------------------------------------------------------------------------------- progress


@dataclass
class Pulse:
    """The job's progress while a backend produces: ``step(rows)`` once per decoding step (a heartbeat with
    the token rate at most every ``HEARTBEAT_S`` seconds), ``report(responses, info)`` for responses
    finished but not yet written (a shard done on another worker)."""

    on_progress: ProgressFn | None
    total: int
    done: int = 0
    tokens: int = 0  # decoded by the batches already written
    seconds: float = 0.0
    _pending: int = 0
    _counted: int = 0
    _t0: float = field(default_factory=time.perf_counter)
    _last: float = field(default_factory=time.perf_counter)

    def restart(self) -> None:
        self._t0 = self._last = time.perf_counter()
        self._counted = 0

    def step(self, rows: int) -> None:
        self._counted += rows
        now = time.perf_counter()
        if self.on_progress is not None and now - self._last >= HEARTBEAT_S:
            self._last = now
            rate = (self.tokens + self._counted) / max(self.seconds + now - self._t0, 1e-9)
            self.on_progress(self.done, self.total, f"{rate:.1f} tok/s")

    def report(self, responses: int, info: str) -> None:
        self._pending += responses
        if self.on_progress is not None:
            self.on_progress(min(self.total, self.done + self._pending), self.total, info)

    def wrote(self, produced: Produced, n: int) -> None:
        self.done += n
        self.tokens += produced.new_tokens
        self.seconds += produced.seconds
        self._pending = max(0, self._pending - n)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total, f"{self.tokens / max(self.seconds, 1e-9):.1f} tok/s")
        self.restart()


# --------------------------------------------------------------------------------------- the job


def _chunks(items: Sequence[PromptItem], k: int, per_chunk: int, rid, done) -> list[Chunk]:
    out = []
    for i in range(0, len(items), per_chunk):
        part = list(items[i: i + per_chunk])
        todo = [(p, s) for p in part for s in range(k) if rid(p.id, s) not in done]
        if todo:
            out.append(Chunk(part, todo))
    return out


def run_generate_job(backend: Any, prompts_path: str | Path, out_path: str | Path, *, k: int, sampling: Sampling,
                     layout: Layout = GENERATE, overwrite: bool = False, adopt: bool = False,
                     on_progress: ProgressFn | None = None) -> GenerateStats:
    """Sample ``k`` completions per prompt of ``prompts_path`` with ``backend`` into ``out_path`` (JSONL),
    resumable (see the module docstring). ``overwrite`` starts afresh; ``adopt`` ties an output written
    before it had a manifest. Raises ``DataError`` for a bad prompts file and ``FinealignError`` for bad
    settings or an output made otherwise (naming what differs)."""
    from .data.identity import refuse_changed_records
    from .data.io import JsonlAppender

    s = sampling
    items, out_path = checked_generate_inputs(prompts_path, out_path, k=k, batch_size=backend.rows_per_chunk,
                                              temperature=s.temperature, top_p=s.top_p,
                                              max_new_tokens=s.max_new_tokens)
    rid, total = layout.rid, len(items) * k
    written = empty = truncated = 0
    cut_ids: set[str] = set()
    with backend:  # a backend that cannot run fails here, before anything is written
        tie_generate_output(out_path, backend.fingerprint_model, temperature=s.temperature, top_p=s.top_p,
                            max_new_tokens=s.max_new_tokens, seed=s.seed, dtype=backend.dtype, backend=backend.name,
                            overwrite=overwrite, verb=layout.verb, adopt=adopt and not overwrite)
        made_from: dict[str, Any] = {}  # prompt id -> the prompt its rows were made from

        def row_key(o: dict) -> str:
            made_from.setdefault(str(o.get("prompt_id")), o.get("prompt"))
            return o["id"]

        with JsonlAppender(out_path, key=row_key) as app:
            refuse_changed_records(out_path, made_from, {str(p.id): p.prompt for p in items}, "prompt text")
            skipped = sum(rid(p.id, j) in app for p in items for j in range(k))
            pulse = Pulse(on_progress, total, done=skipped)
            if on_progress is not None:
                on_progress(skipped, total, "")
            chunks = _chunks(items, k, max(1, backend.rows_per_chunk // k), rid, app.done)
            for produced in backend.produce(chunks, pulse):
                n = 0
                for row in produced.rows:
                    r = rid(row.item.id, row.sample)
                    if r in app:
                        continue
                    app.append(layout.line(r, row, backend.model_name, backend.meta))
                    n += 1
                    empty += not row.completion.text.strip()
                    truncated += row.completion.finish_reason == FINISH_LENGTH
                    if row.cut:
                        cut_ids.add(row.item.id)
                written += n
                pulse.wrote(produced, n)
    return GenerateStats(prompts=len(items), responses_written=written, skipped=skipped, empty=empty,
                         truncated=truncated, new_tokens=pulse.tokens, seconds=pulse.seconds,
                         prompts_cut=len(cut_ids))


def rows_of_records(records: Iterable[dict], items: Sequence[PromptItem]) -> list[Row]:
    """``Row``s back from generate records (a shard's results), their prompts matched by ``prompt_id``."""
    by_id = {p.id: p for p in items}
    return [Row(by_id[str(o["prompt_id"])], int(o.get("sample", 0)),
                Completion(o["completion"], o["meta"]["finish_reason"], int(o["meta"]["n_tokens"])),
                int(o["meta"].get("prompt_cut_tokens", 0))) for o in records]
