"""``finealign report RUN_DIR...``: one self-contained HTML report of one or more runs.

Flags are generated from :class:`ReportConfig`: the pipeline's report stage settings and the folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import setting
from ..pipeline.configs import ReportStage


@dataclass(kw_only=True)
class ReportConfig(ReportStage):
    """Write report.html: stages and settings, reward accuracy vs the length baseline, the judge's own
    accuracy, training curves, a token-reward heatmap, win rates with intervals, samples before/after."""

    run_dirs: list[str] = setting(default_factory=list, positional=True, required=True, metavar="RUN_DIR...",
                                  help="Run folders written by `finealign run`.")
    out: str | None = setting(None, short="-o", help="HTML file (default: RUN_DIR/report.html).")


def run_report(cfg: ReportConfig, quiet: bool = False) -> None:
    from ..report.build import build_report
    from .common import console, out as stdout

    run_dirs = [Path(d) for d in cfg.run_dirs]
    path = build_report(run_dirs, Path(cfg.out) if cfg.out else run_dirs[0] / "report.html", title=cfg.title,
                        samples=cfg.samples, heatmap=cfg.heatmap, max_chars=cfg.max_chars,
                        log=(lambda m: None) if quiet else (lambda m: console.print(m, highlight=False)))
    stdout.print(f"report: {path}", highlight=False, soft_wrap=True)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "report", ReportConfig, run_report, help=" ".join(ReportConfig.__doc__.split()))
