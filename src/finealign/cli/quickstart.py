"""``finealign quickstart``: both papers' pipelines on the built-in default model and bundled data, then
one report.

It runs the two shipped recipes (``recipes/flr-dpo.yaml``: k samples -> FLR labels -> DPO and KTO ->
win rates; ``recipes/fine-grained-ppo.yaml``: minimal edits -> token reward model -> PPO at token and
sequence level -> win rates) at one scale into ``OUT/flr-dpo/`` and ``OUT/fine-grained-ppo/``, writes
``OUT/report.html`` over both and ``OUT/summary.md``, and prints the report's path and a five-line
summary. Scales: ``tiny`` (the tiny random model, a smoke test of every stage), ``default`` (the
built-in SmolLM2-135M on a CPU), ``full`` (the GPU scale of the recipes). A rerun skips what is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from ..config import Settings, setting

DEMO_PROMPTS = "mt_bench_demo.jsonl"
RECIPES = ("flr-dpo", "fine-grained-ppo")
SCALES = ("tiny", "default", "full")


def demo_prompts_path() -> Path:
    """The bundled demo prompts (six MT-Bench first turns, Apache-2.0; see resources/prompts/NOTICE)."""
    return Path(str(resources.files("finealign.resources").joinpath("prompts", DEMO_PROMPTS)))


class QuickstartResult(NamedTuple):
    """What ``run_quickstart`` wrote (``paths``: report, summary and each recipe's run folder, by name),
    the five summary lines it prints, and its wall time in seconds."""

    paths: dict
    summary: list
    seconds: float

    def __getitem__(self, key):  # result["report"] like the dict of paths it used to be
        return self.paths[key] if isinstance(key, str) else tuple.__getitem__(self, key)


def f(x) -> str:
    """A rate with two decimals, or n/a."""
    return "n/a" if x is None else f"{x:.2f}"


def _ci(ci) -> str:
    return f"[{f(ci[0])}, {f(ci[1])}]" if ci else "[n/a]"


def _summary(runs, seconds: float, scale: str, report: Path) -> list[str]:
    """Five lines: the run, FLR -> DPO/KTO, PPO token vs sequence, reward checks, where the report is."""
    from ..report.run_data import reward_rows, winrate_rows

    wr = {r["stage"].split("/")[-1]: r for r in winrate_rows(runs)}
    rw = {r["stage"].split("/")[-1]: r for r in reward_rows(runs)}

    def win(name):
        r = wr.get(name)
        if r is None:
            return "not run"
        return f"{f(r.get('win_rate'))} {_ci(r.get('win_rate_ci'))}"

    judge = next(iter(wr.values()), {})
    chk = judge.get("judge_check") or {}
    verdict = "" if not chk else (f"; judge accuracy {f(chk.get('accuracy'))} {_ci([chk.get('ci_low'), chk.get('ci_high')])}"
                                  + ("" if chk.get("evidence") else ": at chance, not evidence"))

    def acc(name):
        r = rw.get(name)
        return "not run" if r is None else f"{f(r['value'])} vs longer-wins {f(r['length'])}"

    return [
        f"quickstart (scale {scale}): {len(runs)} recipes, {sum(len(r.stages) for r in runs)} stages in {seconds / 60:.1f} min",
        f"win rate vs initial policy: FLR-DPO {win('winrate-dpo')}, FLR-KTO {win('winrate-kto')}{verdict}",
        f"win rate vs initial policy: PPO token-level {win('winrate-token')}, sequence-level {win('winrate-sequence')}",
        f"reward accuracy on held-out human pairs: FLR {acc('flr-check')}; token RM {acc('rm-check')}",
        f"report: {report}",
    ]


def _sim_line(study: dict) -> str:
    """One line from the sim study's result: per task, PPO with the gold reward, token vs sequence level: the
    rollouts' gold from the first batch to the last 3 steps, and steps to half the gap (with how many seeds)."""
    parts = []
    for task, s in study["ppo"].items():
        runs = s["by_run"]
        tok, seq = runs.get("gold/token"), runs.get("gold/sequence")
        if not (tok and seq):
            continue
        steps = lambda g: f(g["mean_steps_to_target"]) if g["mean_steps_to_target"] is not None else "not reached"  # noqa: E731
        parts.append(f"{task} {f(s['initial_gold'])} -> token {f(tok['final_gold'])} / sequence "
                     f"{f(seq['final_gold'])}, steps to half the gap {steps(tok)} / {steps(seq)} "
                     f"({len(tok['runs'])} seed{'s' if len(tok['runs']) > 1 else ''})")
    return "sim testbed, PPO with the gold reward (token / sequence level): " + ("; ".join(parts) or "no PPO runs")


def _summary_md(runs, seconds: float, scale: str) -> str:
    """The measured table (markdown) with the command that made it."""
    from ..eval.judge_orders import paths_summary
    from ..report.build import lc_text
    from ..report.run_data import reward_rows, winrate_rows

    rows = ["| what | figure | judge / baseline |", "|---|---|---|"]
    for r in winrate_rows(runs):
        c = r.get("judge_check") or {}
        judge = (f"{r.get('judge')}: accuracy {f(c.get('accuracy'))} {_ci([c.get('ci_low'), c.get('ci_high')])}; "
                 f"{paths_summary(r.get('judge_paths'))}")
        rows.append(f"| {r['stage']}: win rate vs initial (n={r.get('n')}) | {f(r.get('win_rate'))} "
                    f"{_ci(r.get('win_rate_ci'))}, LC {lc_text(r)} | {judge} |")
    for r in reward_rows(runs):
        rows.append(f"| {r['stage']}: {r['scorer']} pairwise accuracy (n={r['n']}) | {f(r['value'])} {_ci(r['ci'])} "
                    f"| longer wins {f(r['length'])} |")
    rows.append(f"| wall time, scale {scale} | {seconds / 60:.1f} min | |")
    return f"`finealign quickstart --scale {scale}`\n\n" + "\n".join(rows) + "\n"


def run_quickstart(
    out_dir: str | Path = "finealign-quickstart",
    *,
    scale: str = "default",
    recipes: tuple[str, ...] = RECIPES,
    var_overrides: dict | None = None,
    log: Callable[[str], None] = print,
    progress=None,
    quiet: bool = False,
    sim: bool | None = None,
    sim_args: list[str] | None = None,
    share: bool = True,
) -> QuickstartResult:
    """Run the shipped recipes at ``scale`` into ``out_dir``, then the report; returns the paths written
    (``report``, ``summary``, each recipe's run folder), the five summary lines and the wall time.

    ``var_overrides`` ({var: value}) apply to every recipe that declares the variable (e.g. ``model``).
    ``sim`` (default: on at every scale but ``tiny``) first runs a 1-seed slice of the sim study's ``--fast``
    preset into ``OUT/sim-study`` (``finealign.pipeline.sim_study``): PPO with the gold reward at token and
    sequence level on the small ``constraints`` policy (built once into FINEALIGN_HOME/sim-policies; at scale
    ``tiny`` a tiny one under OUT/sim-study); ``sim_args``: more of its flags. Its line leads the summary
    (six lines) and its gold curves lead the report. ``share=False``: no score cache shared between a recipe's
    stages (``pipeline.runner.run_recipe``), the baseline of ``benchmarks/work_done_once.py``.
    Raises ``ConfigError`` for an unknown scale and ``FinealignError`` when a stage fails.
    """
    from ..data.io import write_text_atomic
    from ..errors import ConfigError
    from ..models.default import BUILTINS, pull
    from ..pipeline.recipe import load_recipe
    from ..pipeline.runner import run_recipe
    from ..report.build import build_report
    from ..report.run_data import load_run

    if scale not in SCALES:
        raise ConfigError("scale", f"{scale!r} is not one of {', '.join(SCALES)}")
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    loaded = []
    for name in recipes:  # check every recipe before running any
        rec = load_recipe(name, scale=scale)
        over = {k: v for k, v in (var_overrides or {}).items() if k in rec.vars}
        loaded.append(load_recipe(name, scale=scale, var_overrides=over) if over else rec)
    unknown = sorted(set(var_overrides or {}) - {k for r in loaded for k in r.vars})
    if unknown:
        known = sorted({k for r in loaded for k in r.vars})
        raise ConfigError("--var", f"{', '.join(unknown)}: not a variable of the recipes; variables: {', '.join(known)}")
    for model in dict.fromkeys(str(r.vars.get("model")) for r in loaded):
        if model in BUILTINS:
            log(f"model: {model}")
            pull(model, log=lambda m: log(f"  {m}"))
    arts: dict[str, Path] = {}
    study, sim_out = None, out_dir / "sim-study"
    if (scale != "tiny") if sim is None else sim:
        log("== sim study, a 1-seed slice of --fast: PPO with the gold reward, token vs sequence (docs/sim.md)")
        study = _run_sim_slice(sim_out, scale, sim_args)
        arts["sim-study"] = sim_out
    for i, rec in enumerate(loaded, 1):
        log(f"== recipe {i}/{len(loaded)}: {rec.name} ({rec.description})")
        run_recipe(rec, out_dir / rec.name, log=log, progress=progress, quiet=quiet, share=share)
        arts[rec.name] = out_dir / rec.name
    sim_line = _sim_line(study) if study else None
    seconds = time.perf_counter() - t0
    report = build_report([arts[r.name] for r in loaded], out_dir / "report.html",
                          title=f"finealign quickstart (scale {scale})", log=log, sim_study=study)
    runs = [load_run(arts[r.name]) for r in loaded]
    arts["report"] = report
    md = _summary_md(runs, seconds, scale) + (f"\n{sim_line} (`{sim_out / 'study.json'}`)\n" if sim_line else "")
    arts["summary"] = write_text_atomic(out_dir / "summary.md", md)
    lines = _summary(runs, seconds, scale, report)
    return QuickstartResult(arts, [sim_line, *lines] if sim_line else lines, seconds)


def _run_sim_slice(out: Path, scale: str, sim_args: list[str] | None) -> dict:
    """The sim study's ``--fast`` preset, 1 seed of the gold reward on ``constraints`` (token and sequence
    level), into ``out``; returns its study dict."""
    from ..paths import home
    from ..studies.sim_study import main as sim_study

    policies = out / "policies" if scale == "tiny" else home() / "sim-policies"
    args = ["--fast", "--tasks", "constraints", "--ppo-rewards", "gold", "--ppo-seeds", "0", "--stages", "data",
            "ppo", "--policies", str(policies), "--out", str(out), "--png-prefix", str(out / "plot")]
    return sim_study(args + (["--policy-size", "tiny"] if scale == "tiny" else []) + list(sim_args or []),
                     echo=False)


@dataclass(kw_only=True)
class QuickstartConfig(Settings):
    """Both papers' pipelines (FLR -> DPO/KTO; minimal edits -> token RM -> PPO) on bundled data, then one
    HTML report with win rates, reward accuracy, curves and samples."""

    scale: str = setting("default", choices=SCALES, help="tiny (tiny random model, ~1 min) | default (the built-in "
                                                         "SmolLM2-135M on a CPU) | full (the GPU scale).")
    out: str = setting("finealign-quickstart", short="-o", deprecated=("--out-dir",), help="Output folder.")
    model: str | None = setting(None, short="-m", help="Policy model spec (default: the scale's).")
    var: list[str] = setting(default_factory=list, help="Override a recipe variable: NAME=VALUE (repeatable).")
    sim: bool | None = setting(None, help="First run a 1-seed slice of the sim study's --fast preset into "
                                          "OUT/sim-study: PPO with the gold reward, token vs sequence level, on a "
                                          "small constraints policy (built once, about 5 min; docs/sim.md); "
                                          "default: on at every scale but tiny.")
    share: bool = setting(True, help="A recipe's stages with the same scorer or judge share its scores; --no-share "
                                     "scores each stage afresh (to measure what sharing saves).")


def run_quickstart_cli(cfg: QuickstartConfig, quiet: bool = False) -> None:
    """Run both recipes with progress bars; the five summary lines on stdout."""
    import warnings

    from .common import console, out as stdout
    from .run import parse_vars, progress_bars

    warnings.filterwarnings("ignore", category=FutureWarning)
    over = parse_vars(cfg.var)
    if cfg.model:
        over["model"] = cfg.model
    with progress_bars(disable=quiet) as bars:
        res = run_quickstart(cfg.out, scale=cfg.scale, var_overrides=over, progress=bars, quiet=quiet, sim=cfg.sim,
                             share=cfg.share, log=lambda m: console.print(m, highlight=False, markup=False))
    for line in res.summary:
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"open {res.paths['report']} in a browser; the measured table is in {res.paths['summary']}",
                  highlight=False)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "quickstart", QuickstartConfig, run_quickstart_cli, resumable=True)
