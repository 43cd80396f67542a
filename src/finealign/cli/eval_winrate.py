"""``finealign eval winrate``: win rate and length-controlled win rate against a reference, with a validated judge.

Flags are generated from :class:`finealign.eval.winrate.WinrateConfig`.
"""

from __future__ import annotations

from pathlib import Path

STAGES = {"generate-model": "generate (model)", "generate-reference": "generate (reference)",
          "judge-check": "judge check", "judge": "judge"}


def run_winrate_cli(cfg, quiet: bool = False) -> None:
    """Run the evaluation with a progress bar per stage; the markdown report on stdout."""
    from ..eval.winrate import run_winrate
    from .common import console, out as stdout, progress

    tasks: dict[str, int] = {}
    with progress(disable=quiet) as p:
        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = p.add_task(STAGES.get(stage, stage), total=total, info="")
            p.update(tasks[stage], completed=done, total=total)

        res = run_winrate(cfg, on_progress=on_progress)
    stdout.print(Path(res.paths["markdown"]).read_text(encoding="utf-8"), soft_wrap=True, highlight=False,
                 markup=False)
    from rich.markup import escape

    for warning in (res.warning, res.lc_warning):
        if warning:
            console.print(f"[bold red]warning:[/] {escape(warning)}", soft_wrap=True, highlight=False)
    console.print(f"-> {res.paths['json']}")


def register(eval_app, **_):
    from ..eval.winrate import WinrateConfig
    from .options import command_from_config

    command_from_config(eval_app, "winrate", WinrateConfig, run_winrate_cli,
                        help="Win rate (ties 1/2, SE, bootstrap CI) and AlpacaEval-2 length-controlled win rate vs a "
                             "reference, judged in both orders by a judge whose own accuracy is measured and printed "
                             "beside it.", resumable=True)
