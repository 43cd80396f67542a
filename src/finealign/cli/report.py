"""``finealign report RUN_DIR...``: one self-contained HTML report of one or more runs.

Flags are generated from :class:`~finealign.verbs.settings.ReportConfig`: the report's settings and the folders.
"""

from __future__ import annotations

from ..verbs.settings import ReportConfig


def run_report(cfg: ReportConfig, quiet: bool = False) -> None:
    from ..verbs import run_verb
    from ..verbs.run import Hooks
    from .common import console, out as stdout

    path = run_verb("report", cfg, Hooks(log=(lambda m: None) if quiet else (lambda m: console.print(m, highlight=False))))
    stdout.print(f"report: {path}", highlight=False, soft_wrap=True)


def register(app, **_):
    from .options import command_from_row

    command_from_row(app, "report", run_report)
