"""CLI helpers of the data-parallel verbs (``generate``, ``score``, ``label``, ``eval-rm``) on an engine.

Their ``--engine ray [--ray-address ADDR] [--workers N] [--shard-size N]`` flags are fields of
:class:`finealign.engine.shards.EngineArgs`, which each verb's config dataclass composes.
"""

from __future__ import annotations


def shard_events():
    """An ``on_event`` printing every failed shard on stderr (the run goes on with the others)."""
    from .common import console

    def on_event(kind: str, info: dict) -> None:
        if kind == "failed":
            console.print(f"shard {info['shard']} failed: {info['message']}", style="yellow", markup=False,
                          highlight=False, soft_wrap=True)

    return on_event


def engine_progress(bar, task):
    """An ``on_progress(done, total, info)`` of the sharded runs, drawn on ``bar``'s ``task``."""
    return lambda done, total, info: bar.update(task, completed=done, total=total, info=info)
