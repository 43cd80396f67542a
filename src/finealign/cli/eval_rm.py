"""``finealign eval-rm``: pairwise accuracy / rating correlation / system ranking of any scorer."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app, **_):
    @app.command("eval-rm")
    def eval_rm_cmd(
        scorer: str = typer.Option(..., "--scorer", "-s", help="Scorer spec, e.g. flr:smollm2-135m-instruct,mode=pmi"),
        benchmark: str = typer.Option(..., "--benchmark", "-b", help="hh-harmless | alpaca-eval | prometheus-mt-bench "
                                      "| prometheus-vicuna | alpaca-eval-systems | a pair/rating FILE"),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder: results.json, results.md, scores.jsonl "
                                 "(the score cache; a rerun resumes)."),
        limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Evaluate N items (alpaca-eval-systems: "
                                            "N instructions x every system)."),
        sample_seed: Optional[int] = typer.Option(None, "--sample-seed", help="Draw the N items with this seed "
                                                  "instead of taking the first N."),
        max_chars: Optional[int] = typer.Option(None, "--max-chars", help="Cut responses to this many characters "
                                                "before scoring (CPU budgets)."),
        batch_size: int = typer.Option(8, "--batch-size", help="Responses per scorer call."),
        n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the 95% intervals."),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Shared data folder (built-in benchmarks)."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        """Evaluate a reward (scorer) on a benchmark, next to the length baseline; writes JSON + markdown."""
        from ..eval.rm_eval import EvalConfig, run_eval
        from .common import console, out as stdout, progress

        cfg = EvalConfig(scorer=scorer, benchmark=benchmark, out=out, limit=limit, sample_seed=sample_seed,
                         max_chars=max_chars, batch_size=batch_size, n_boot=n_boot, seed=seed, data_dir=data_dir)
        console.print(f"evaluating {scorer} on {benchmark} ...")
        with progress(disable=quiet) as p:
            task = p.add_task("scoring", total=None, info="")
            res = run_eval(cfg, on_total=lambda n: p.update(task, total=n),
                           on_progress=lambda n: p.advance(task, n))
        stdout.print(open(res.paths["markdown"], encoding="utf-8").read(), soft_wrap=True, highlight=False,
                     markup=False)
        console.print(f"scored {res.scored_now} responses now ({res.units - res.scored_now} from the cache) in "
                      f"{res.seconds:.1f} s -> {res.paths['json']}")
