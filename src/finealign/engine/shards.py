"""Sharded execution of the data-parallel verbs, independent of the engine that runs the shards.

A sharded run cuts its work (prompts to sample, responses to score) into *shards* of consecutive
units, has a *job* process each shard (in this process, or in Ray workers: ``ray_engine``), and
keeps every finished shard as one file in a *shard store*, written atomically. A run that is
killed (a worker or the driver) leaves finished shards on disk; the rerun skips them, so nothing is
computed twice and nothing is lost. When every shard is done, the caller merges them in shard order
into the verb's ordinary output and removes the store.

Identical output. Shard boundaries are multiples of the verb's own batch (``align``) and a job
processes its shard in the same batches as the single-process code, so every model call sees the
same inputs and the merged output is byte-identical to the single-process output (same thread count
per process assumed: BLAS reductions may round differently with other thread counts).

Layout of a store ``DIR`` (``OUT.shards/``): ``manifest.json`` (for people) and one file per
finished shard, ``shard-00000-<hash>.jsonl`` (first line ``{"stats": {...}}``, then the results in
unit order). The hash covers the settings and the shard's units, so a shard made with other settings
or other input is never reused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from ..config import ENGINES, EngineArgs  # noqa: F401  (declared with the other shared settings)
from ..errors import FinealignError


EventFn = Callable[[str, dict], None]  # on_event(kind, info): "workers", "shard", "failed"


@dataclass(frozen=True)
class Shard:
    """Units ``[start, end)`` of the run's unit list; ``index`` names its file."""

    index: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def default_shard_size(n_units: int) -> int:
    """About 32 shards, at least 1 and at most 512 units each (before rounding up to the batch)."""
    return max(1, min(512, math.ceil(n_units / 32)))


def plan_shards(n_units: int, shard_size: int | None = None, align: int = 1) -> list[Shard]:
    """Consecutive shards covering ``n_units`` units; every boundary is a multiple of ``align``.

    ``shard_size`` (None: ``default_shard_size``) is rounded up to a multiple of ``align``; the last
    shard holds the rest. Example: 10 units, size 3, align 2 -> size 4: [0, 4), [4, 8), [8, 10).
    """
    if n_units < 0 or align < 1:
        raise ValueError(f"n_units must be >= 0 and align >= 1, got {n_units}, {align}")
    size = shard_size or default_shard_size(n_units)
    size = math.ceil(size / align) * align
    return [Shard(i, s, min(s + size, n_units)) for i, s in enumerate(range(0, n_units, size))]


def fingerprint(*parts: Any) -> str:
    """sha256 (16 hex) of JSON-serialisable parts (settings, unit contents)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]


class ShardStore:
    """A folder of finished shards; see the module docstring.

    A shard's file name carries a fingerprint of the run's settings and of the shard's own units
    (``shard-00003-<hash>.jsonl``), so a rerun reuses exactly the shards it would compute again and
    never a shard made with other settings or other input. ``unit_print(shard)`` gives the
    JSON-serialisable content of a shard's units.
    """

    def __init__(self, folder: str | Path, run_print: str, shards: Sequence[Shard],
                 unit_print: Callable[[Shard], Any], describe: dict | None = None):
        from ..data.io import write_json

        self.folder = Path(folder)
        self.shards = list(shards)
        self._names = {s.index: f"shard-{s.index:05d}-{fingerprint(run_print, unit_print(s))}.jsonl"
                       for s in self.shards}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / "manifest.json", {"run": run_print, "shards": len(self.shards),
                                                   "files": list(self._names.values()), **(describe or {})})

    def path(self, index: int) -> Path:
        return self.folder / self._names[index]

    def is_done(self, index: int) -> bool:
        return self.path(index).exists()

    def pending(self) -> list[Shard]:
        return [s for s in self.shards if not self.is_done(s.index)]

    def write(self, shard: Shard, rows: list[dict], stats: dict | None = None, per_unit: int | None = 1) -> None:
        """Keep a finished shard atomically; ``rows``: ``per_unit`` results per unit (None: any number),
        in unit order."""
        from ..data.io import write_jsonl

        if per_unit is not None and len(rows) != shard.size * per_unit:
            raise FinealignError(f"shard {shard.index}: {len(rows)} results for {shard.size} units")
        write_jsonl(self.path(shard.index), [{"stats": stats or {}}, *rows])

    def read(self, shard: Shard) -> tuple[list[dict], dict]:
        lines = self.path(shard.index).read_text(encoding="utf-8").splitlines()
        head = json.loads(lines[0])
        return [json.loads(x) for x in lines[1:]], head.get("stats", {})

    def results(self) -> tuple[list[dict], dict]:
        """Every shard's results in order, and the shards' numeric stats summed."""
        rows: list[dict] = []
        total: dict = {}
        for s in self.shards:
            r, st = self.read(s)
            rows += r
            for k, v in st.items():
                if isinstance(v, (int, float)):
                    total[k] = total.get(k, 0) + v
        return rows, total

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class ShardJob(Protocol):
    """What a worker runs: ``setup()`` once (load the model), then ``run(payload)`` per shard,
    returning ``(rows, stats)``; a failure raises ``FinealignError`` naming the record."""

    def setup(self) -> None: ...

    def run(self, payload: Any) -> tuple[list[dict], dict]: ...


class ShardFailures(FinealignError):
    """Some shards failed; the others are kept. ``failures``: {shard index: message}."""

    def __init__(self, failures: dict[int, str], total: int, folder: Path):
        self.failures = dict(sorted(failures.items()))
        first = next(iter(self.failures.values()))
        super().__init__(f"{len(failures)} of {total} shards failed, first: {first} "
                         f"(finished shards are kept in {folder}; fix the cause and rerun the same command to resume)")


def locate_failure(score: Callable[[list], Any], items: list, origins: list[str], error: Exception) -> FinealignError:
    """Name the record behind a failed batch: ``origin: problem``.

    ``error.index`` (scorers set it for an empty response) names the item directly; otherwise the
    items are retried one at a time and the first that raises is named. ``origins[i]`` is item i's
    place, e.g. ``data.jsonl:7: completion``.
    """
    idx = getattr(error, "index", None)
    if idx is None:
        for i, it in enumerate(items):
            try:
                score([it])
            except Exception as e:  # noqa: BLE001 - any exception names its record
                idx, error = i, e
                break
    where = origins[idx] if idx is not None and idx < len(origins) else "batch of " + ", ".join(origins[:3])
    problem = str(error) if isinstance(error, FinealignError) else f"{type(error).__name__}: {error}"
    return FinealignError(f"{where}: {problem}")


def run_local(job: ShardJob, store: ShardStore, payload_of: Callable[[Shard], Any],
              on_event: EventFn | None = None) -> None:
    """Process the store's pending shards one after another in this process (engine ``local``).

    Raises ``ShardFailures`` after trying every shard when some failed.
    """
    pending = store.pending()
    if not pending:
        return
    job.setup()
    if on_event:
        on_event("workers", {"pids": [os.getpid()], "threads": None, "gpus": 0})
    failures: dict[int, str] = {}
    for shard in pending:
        t0 = time.perf_counter()
        try:
            rows, stats = job.run(payload_of(shard))
        except FinealignError as e:
            failures[shard.index] = str(e)
            if on_event:
                on_event("failed", {"shard": shard.index, "message": str(e)})
            continue
        store.write(shard, rows, stats, per_unit=getattr(job, "per_unit", 1))
        if on_event:
            on_event("shard", {"shard": shard.index, "units": shard.size, "seconds": time.perf_counter() - t0,
                               "pid": None})
    if failures:
        raise ShardFailures(failures, len(store.shards), store.folder)


class LocalRunner:
    """Runs shards in this process; the engine-independent reference for ``RayRunner``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, job: ShardJob, store: ShardStore, payload_of: Callable[[Shard], Any],
            on_event: EventFn | None = None) -> None:
        run_local(job, store, payload_of, on_event)
