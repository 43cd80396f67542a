"""``finealign eval rm``: pairwise accuracy / rating correlation / system ranking of any scorer.

Flags are generated from :class:`~finealign.verbs.settings.EvalRMCommandConfig`: the library's
:class:`~finealign.eval.rm_eval.EvalConfig` and the engine options. The verb runs through the verb table
(``finealign.verbs``); this module prints.
"""

from __future__ import annotations

from ..verbs.settings import EvalRMCommandConfig


def run_eval_rm(cfg: EvalRMCommandConfig, quiet: bool = False) -> None:
    from ..verbs import run_verb
    from .common import console, out as stdout, verb_hooks

    console.print(f"evaluating {cfg.scorer} on {cfg.benchmark} ...")
    with verb_hooks(quiet) as hooks:
        res = run_verb("eval-rm", cfg, hooks)
    stdout.print(open(res.paths["markdown"], encoding="utf-8").read(), soft_wrap=True, highlight=False,
                 markup=False)
    console.print(f"scored {res.scored_now} responses now ({res.units - res.scored_now} from the cache) in "
                  f"{res.seconds:.1f} s -> {res.paths['json']}")


def register(eval_app, **_):
    from .options import command_from_row

    command_from_row(eval_app, "eval-rm", run_eval_rm)
