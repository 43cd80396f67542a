"""``finealign run RECIPE.yaml``: run a recipe's stages in order (resumable, selectable)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, setting


@contextmanager
def progress_bars(disable: bool = False):
    """One rich progress display; yields ``progress(label)`` -> ``on_progress(done, total, info)``."""
    from .common import progress

    with progress(disable=disable) as bar:
        def make(label: str):
            task = None

            def update(done: int, total: int, info: str = "") -> None:
                nonlocal task
                if task is None:
                    task = bar.add_task(label, total=total or None, completed=done, info=info or "")
                else:
                    bar.update(task, completed=done, total=total or None, info=info or "")

            return update

        yield make


def parse_vars(items: list[str] | None) -> dict:
    from ..errors import ConfigError

    out = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise ConfigError("--var", f"expected NAME=VALUE, got {it!r}")
        out[k.strip()] = v
    return out


def default_run_dir(recipe) -> Path:
    return Path("runs") / (recipe.name if recipe.scale == "default" else f"{recipe.name}-{recipe.scale}")


@dataclass(kw_only=True)
class RunConfig(Settings):
    """Run a recipe: its stages (generate, label, train, eval, report, ...) in order, each into OUT/STAGE.

    A stage finished with the same settings is skipped; one whose settings changed reruns; an
    interrupted one resumes. The recipe is checked (file, line and field named) before anything runs.
    """

    recipe: str = setting(None, positional=True, required=True, metavar="RECIPE",
                          help="Recipe YAML file, or a shipped recipe's name (flr-dpo, fine-grained-ppo).")
    out: str | None = setting(None, short="-o", help="Run folder (default: runs/NAME[-SCALE]); each stage writes "
                                                     "into OUT/STAGE.")
    only: list[str] = setting(default_factory=list, help="Run only these stages (repeatable or comma separated); "
                                                         "their inputs must be done.")
    start: str | None = setting(None, flag="--from", help="Run this stage and every later one.")
    skip: list[str] = setting(default_factory=list, help="Leave these stages out (repeatable).")
    scale: str | None = setting(None, help="A scale of the recipe (its `scales:`), e.g. tiny or full; default: the "
                                           "recipe's vars.")
    var: list[str] = setting(default_factory=list, help="Override a recipe variable: NAME=VALUE (repeatable).")
    dry_run: bool = setting(False, help="Check the recipe and show each stage's state; run nothing.")
    share: bool = setting(True, help="Stages with the same scorer or judge share its scores (RUN_DIR/.score-cache); "
                                     "--no-share scores each stage afresh (to measure what sharing saves).")


def run_run(cfg: RunConfig, quiet: bool = False) -> None:
    """Plan (every setting checked), run the stages with progress bars; counts on stdout; exit 1 when a
    stage is incomplete."""
    import typer

    from ..pipeline.recipe import load_recipe
    from ..pipeline.runner import plan, run_recipe
    from .common import console, out as stdout, resumes_into

    rec = load_recipe(cfg.recipe, scale=cfg.scale, var_overrides=parse_vars(cfg.var))
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(rec)
    resumes_into(run_dir)
    plan(rec, run_dir)  # every setting checked before any output (run_recipe plans again, cheaply)
    console.print(f"recipe {rec.name} (scale {rec.scale}) -> {run_dir}", highlight=False)
    with progress_bars(disable=quiet or cfg.dry_run) as bars:
        outcomes = run_recipe(rec, run_dir, only=cfg.only, start=cfg.start, skip=cfg.skip,
                              log=lambda m: console.print(m, highlight=False, markup=False), progress=bars,
                              quiet=quiet, dry_run=cfg.dry_run, share=cfg.share)
    if cfg.dry_run:
        return
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ran", "skipped", "incomplete")}
    stdout.print(f"stages ran: {counts['ran']}  skipped (done before): {counts['skipped']}  "
                 f"incomplete: {counts['incomplete']}  -> {run_dir}", highlight=False, soft_wrap=True)
    report = next((run_dir / o.name / "report.html" for o in outcomes if o.type == "report"), None)
    if report is not None and report.exists():
        stdout.print(f"report: {report}", highlight=False, soft_wrap=True)
    if counts["incomplete"]:
        raise typer.Exit(1)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "run", RunConfig, run_run,
                        help=" ".join(RunConfig.__doc__.split()), resumable=True)
