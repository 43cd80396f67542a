"""The Ray engine: shards processed by Ray actors, each loading the model once.

``RayRunner`` joins a Ray cluster (``address``: ``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``) or
starts a local Ray instance on 127.0.0.1, starts ``workers`` actors (one per GPU of the cluster when
it has GPUs and the job may use them, else each pinned to its share of the CPUs with
``torch.set_num_threads``), and hands each idle actor the next pending shard. A finished shard comes
back to the driver, which writes it to the shard store at once (``shards.ShardStore``), so:

* a killed worker: Ray restarts the actor (the model is loaded again) and retries its shard;
* a killed driver: finished shards are on disk; the rerun processes only the others;
* a worker raising on a record: that shard fails with the record named, the others finish, and the
  run raises ``ShardFailures`` (the CLI exits 1); after the fix a rerun resumes.

Workers return results to the driver, so a multi-machine cluster needs no shared file system; it
does need finealign (and the models named by the job) on every node. Ray is optional:
``pip install 'finealign[ray]'``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable

from ..errors import FinealignError
from .shards import EventFn, Shard, ShardFailures, ShardJob, ShardStore

INSTALL_HINT = ("--engine ray needs Ray, which is not installed: pip install 'finealign[ray]' "
                "(or pip install 'ray>=2.9')")
MAX_RESTARTS = 3  # a worker killed more often than this on one shard fails that shard


def require_ray(local: bool = False):
    """The ``ray`` module; ``FinealignError`` saying what to install when it is missing.

    ``local``: the caller will start a single-machine Ray instance on the loopback address (Ray's
    single-machine mode, its default on macOS and Windows), so nothing listens on the machine's
    network interfaces. Ray reads that mode from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` when it is
    imported (the node's processes inherit it); a Ray imported earlier gets its constant set too.
    """
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise FinealignError(INSTALL_HINT) from None
    if local and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        try:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
        except ImportError:  # pragma: no cover - a Ray without it binds to the node's address
            pass
    return ray


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail fast (``FinealignError``) when nothing listens at ``address`` (``auto`` is not probed)."""
    if address == "auto":
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise FinealignError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise FinealignError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one with "
                             "`ray start --head` or leave out --ray-address to start a local one") from None


class _Worker:
    """The actor: sets its thread count, runs the job's ``setup`` once, then one shard per call."""

    def __init__(self, job: ShardJob, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.job = job
        self.error = None
        try:
            job.setup()
        except Exception as e:  # noqa: BLE001 - reported to the driver by ready()
            self.error = str(e) if isinstance(e, FinealignError) else f"{type(e).__name__}: {e}"

    def ready(self) -> tuple[int, str | None]:
        return os.getpid(), self.error

    def run(self, payload: Any) -> tuple:
        t0 = time.perf_counter()
        try:
            rows, stats = self.job.run(payload)
        except FinealignError as e:
            return ("failed", str(e), os.getpid())
        except Exception as e:  # noqa: BLE001 - any failure is the shard's, named
            return ("failed", f"{type(e).__name__}: {e}", os.getpid())
        return ("ok", rows, stats, os.getpid(), time.perf_counter() - t0)


class RayRunner:
    """Context manager: connect (or start local Ray), ``run`` shards, shut down what it started."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address = address
        self.workers = workers
        self.owned = False
        self.ray = None

    def __enter__(self):
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray = require_ray(local=not self.address)
        if self.address:
            check_reachable(self.address)
        self.ray = ray
        if ray.is_initialized():  # a caller's own ray.init (a notebook, a test session): use it
            return self
        kw: dict = {"logging_level": logging.ERROR, "log_to_driver": False}
        try:
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                cpus = os.cpu_count() or 1
                ray.init(address="local", num_cpus=max(cpus, self.workers or 1), include_dashboard=False, **kw)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise FinealignError(f"cannot start or join Ray ({self.address or 'local'}): {e}") from None
        self.owned = True
        return self

    def __exit__(self, *exc):
        if self.owned and self.ray is not None:
            self.ray.shutdown()
        return False

    def _start(self, job: ShardJob, n_pending: int, on_event: EventFn | None) -> list:
        ray = self.ray
        res = ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 1)), int(res.get("GPU", 0))
        use_gpu = gpus > 0 and getattr(job, "device", "auto") != "cpu"
        n = self.workers or (gpus if use_gpu else max(1, int(cpus)))
        n = max(1, min(n, n_pending))
        threads = max(1, int(cpus // n))
        actor = ray.remote(_Worker).options(num_cpus=min(threads, cpus / n), num_gpus=1 if use_gpu else 0,
                                            max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
        actors = [actor.remote(job, threads) for _ in range(n)]
        try:
            ready = ray.get([a.ready.remote() for a in actors])
        except Exception as e:  # noqa: BLE001 - an actor that could not even start
            raise FinealignError(f"Ray workers could not start: {e}") from None
        errors = [err for _, err in ready if err]
        if errors:
            for a in actors:
                ray.kill(a)
            raise FinealignError(f"Ray workers could not load the job: {errors[0]}")
        if on_event:
            on_event("workers", {"pids": [pid for pid, _ in ready], "threads": threads, "gpus": int(use_gpu)})
        return actors

    def run(self, job: ShardJob, store: ShardStore, payload_of: Callable[[Shard], Any],
            on_event: EventFn | None = None) -> None:
        """Process the store's pending shards on Ray actors; ``ShardFailures`` when some failed."""
        from ray.exceptions import RayActorError, RayError

        ray = self.ray
        pending = store.pending()
        if not pending:
            return
        actors = self._start(job, len(pending), on_event)
        queue, idle, inflight = list(reversed(pending)), list(actors), {}
        failures: dict[int, str] = {}

        def fail(shard: Shard, message: str) -> None:
            failures[shard.index] = message
            if on_event:
                on_event("failed", {"shard": shard.index, "message": message})

        try:
            while queue or inflight:
                while queue and idle:
                    shard, a = queue.pop(), idle.pop()
                    inflight[a.run.remote(payload_of(shard))] = (shard, a)
                if not inflight:  # every worker died
                    for shard in queue:
                        fail(shard, "no Ray worker left (each died more than "
                                    f"{MAX_RESTARTS} times)")
                    break
                done, _ = ray.wait(list(inflight), num_returns=1)
                shard, a = inflight.pop(done[0])
                try:
                    out = ray.get(done[0])
                except RayActorError as e:
                    fail(shard, f"shard {shard.index}: the worker died (killed or out of memory) more than "
                                f"{MAX_RESTARTS} times: {str(e).splitlines()[0]}")
                    continue  # the actor is gone for good: not returned to idle
                except RayError as e:
                    fail(shard, f"shard {shard.index}: {type(e).__name__}: {str(e).splitlines()[0]}")
                    idle.append(a)
                    continue
                idle.append(a)
                if out[0] == "failed":
                    fail(shard, out[1])
                    continue
                _, rows, stats, pid, seconds = out
                store.write(shard, rows, stats, per_unit=getattr(job, "per_unit", 1))
                if on_event:
                    on_event("shard", {"shard": shard.index, "units": shard.size, "seconds": seconds, "pid": pid})
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)
        if failures:
            raise ShardFailures(failures, len(store.shards), store.folder)
