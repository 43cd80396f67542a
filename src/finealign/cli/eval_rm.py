"""``finealign eval rm``: pairwise accuracy / rating correlation / system ranking of any scorer.

Flags are generated from :class:`EvalRMCommandConfig`: the library's
:class:`~finealign.eval.rm_eval.EvalConfig` and the engine options.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import part
from ..eval.rm_eval import EvalConfig
from ..engine.shards import EngineArgs
from .engine_opts import engine_progress, shard_events


@dataclass(kw_only=True)
class EvalRMCommandConfig(EvalConfig, EngineArgs):
    """Evaluate a reward (scorer) on a benchmark, next to the length baseline; writes JSON + markdown."""


def run_eval_rm(cfg: EvalRMCommandConfig, quiet: bool = False) -> None:
    from ..eval.rm_eval import run_eval
    from .common import console, out as stdout, progress

    ecfg, eng = part(cfg, EvalConfig), part(cfg, EngineArgs)
    console.print(f"evaluating {cfg.scorer} on {cfg.benchmark} ...")
    with progress(disable=quiet) as p:
        task = p.add_task("scoring", total=None, info="")
        if eng.engine == "ray":
            from ..engine.sharded import run_eval_sharded

            res = run_eval_sharded(ecfg, engine=eng, on_event=shard_events(), on_progress=engine_progress(p, task))
        else:
            res = run_eval(ecfg, on_total=lambda n: p.update(task, total=n), on_progress=lambda n: p.advance(task, n))
    stdout.print(open(res.paths["markdown"], encoding="utf-8").read(), soft_wrap=True, highlight=False,
                 markup=False)
    console.print(f"scored {res.scored_now} responses now ({res.units - res.scored_now} from the cache) in "
                  f"{res.seconds:.1f} s -> {res.paths['json']}")


def register(eval_app, **_):
    from .options import command_from_config

    command_from_config(eval_app, "rm", EvalRMCommandConfig, run_eval_rm, resumable=True)
