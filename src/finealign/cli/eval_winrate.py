"""``finealign eval winrate``: win rate and length-controlled win rate against a reference, with a validated judge.

Flags are generated from :class:`finealign.eval.winrate.WinrateConfig`.
"""

from __future__ import annotations

from pathlib import Path

def run_winrate_cli(cfg, quiet: bool = False) -> None:
    """Run the evaluation (the verb table's ``eval-winrate``) with a progress bar per step; the markdown report
    on stdout."""
    from rich.markup import escape

    from ..verbs import run_verb
    from .common import console, out as stdout, verb_hooks

    with verb_hooks(quiet) as hooks:
        res = run_verb("eval-winrate", cfg, hooks)
    stdout.print(Path(res.paths["markdown"]).read_text(encoding="utf-8"), soft_wrap=True, highlight=False,
                 markup=False)
    for warning in (res.warning, res.lc_warning):
        if warning:
            console.print(f"[bold red]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    console.print(f"-> {res.paths['json']}")


def register(eval_app, **_):
    from .options import command_from_row

    command_from_row(eval_app, "eval-winrate", run_winrate_cli)
