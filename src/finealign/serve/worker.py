"""One thread owns the model: requests run one at a time, in arrival order, behind a bounded queue.

The HTTP side (asyncio) wraps each request in a :class:`Job` and ``submit``s it; the worker thread
runs ``job.run(job)``. A job reports what it produces with ``job.emit(kind, value)`` (delivered to
the asyncio side through ``job.events``) and calls ``job.step(n)`` between decoding steps: once the
job is cancelled (its client disconnected or timed out, a stop string ended it, the server is
shutting down) ``step`` raises :class:`Cancelled`, so generation stops at the next token and the
model goes to the next request. A job cancelled while it waits is dropped without running.

Fairness: first come, first served (a FIFO). Back-pressure: at most ``max_queue`` jobs wait; the
next one is refused with :class:`QueueFull` (the server answers 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, deque
from typing import Any, Callable

__all__ = ["Cancelled", "Closed", "Job", "ModelWorker", "QueueFull"]


class Cancelled(Exception):
    """Raised inside a running job at its next step once the job was cancelled."""


class QueueFull(Exception):
    """``max_queue`` jobs are already waiting."""


class Closed(Exception):
    """The worker is shutting down and takes no new jobs."""


class Job:
    """One request's work: ``run(job)`` on the worker thread; events to the asyncio loop it came from.

    Events are ``(kind, value)`` pairs: ``("token", id)`` from streaming jobs, then one of
    ``("done", result)``, ``("error", exception)`` or ``("cancelled", None)``.
    """

    def __init__(self, run: Callable[["Job"], Any], loop: asyncio.AbstractEventLoop | None = None):
        self.run = run
        self.loop = loop or asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.tokens = 0  # tokens decoded for this job (all its rows)

    def cancel(self) -> None:
        self.cancelled.set()

    def step(self, tokens: int = 1) -> None:
        """Count ``tokens`` decoded in one step; raise :class:`Cancelled` if the job was cancelled."""
        self.tokens += tokens
        if self.cancelled.is_set():
            raise Cancelled()

    def emit(self, kind: str, value: Any = None) -> None:
        """Hand an event to the asyncio side (thread-safe); a closed loop cancels the job."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone: nobody is listening any more
            self.cancel()


class ModelWorker:
    """The thread that runs jobs one at a time, FIFO, with at most ``max_queue`` waiting.

    ``stats`` counts jobs ``completed``, ``stopped`` (cancelled while running), ``dropped``
    (cancelled while waiting), ``failed``, ``rejected`` (queue full) and ``tokens`` decoded.
    """

    def __init__(self, max_queue: int = 64, name: str = "finealign-model"):
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        self.stats: Counter = Counter()
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition(threading.RLock())  # re-entrant: close() may run in a signal handler
        self._active: Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> bool:
        return self._active is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, job: Job) -> None:
        """Queue ``job``; :class:`QueueFull` when ``max_queue`` wait already, :class:`Closed` after ``close``."""
        with self._cond:
            if self._closed:
                raise Closed()
            if len(self._queue) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull()
            self._queue.append(job)
            self._cond.notify()

    def take_waiting(self, limit: int, accept: Callable[[Job], bool] = lambda job: True) -> list[Job]:
        """Remove up to ``limit`` waiting jobs that ``accept`` (first come, first taken; cancelled ones are
        dropped), for the running job to do along with its own (batching). The caller reports their
        outcome with ``emit`` and counts them with ``count_taken``."""
        taken: list[Job] = []
        with self._cond:
            keep: deque[Job] = deque()
            for job in self._queue:
                if len(taken) < limit and accept(job) and not job.cancelled.is_set():
                    taken.append(job)
                elif job.cancelled.is_set():
                    self.stats["dropped"] += 1
                    job.emit("cancelled")
                else:
                    keep.append(job)
            self._queue = keep
        return taken

    def count_taken(self, kind: str, n: int = 1) -> None:
        """Count ``n`` jobs taken by ``take_waiting`` as ``completed`` or ``failed``."""
        with self._cond:
            self.stats[kind] += n

    def close(self) -> None:
        """Take no new jobs; cancel the waiting ones and the running one (it stops at its next step)."""
        with self._cond:
            self._closed = True
            for job in self._queue:
                job.cancel()
            if self._active is not None:
                self._active.cancel()
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _next(self) -> Job | None:
        """The next job to run (dropping cancelled ones), or None once closed and drained."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return None
                job = self._queue.popleft()
                if not job.cancelled.is_set():
                    self._active = job
                    return job
                self.stats["dropped"] += 1
                job.emit("cancelled")

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            try:
                result = job.run(job)
            except Cancelled:
                self.stats["stopped"] += 1
                job.emit("cancelled")
            except BaseException as e:  # noqa: BLE001 - handed to the request that caused it
                self.stats["failed"] += 1
                job.emit("error", e)
            else:
                self.stats["completed"] += 1
                job.emit("done", result)
            finally:
                self.stats["tokens"] += job.tokens
                with self._cond:
                    self._active = None
