"""Win rate of a model against a reference, judged by a validated judge (``finealign eval winrate``).

``run_winrate(cfg)`` (1) reads or generates both sides' outputs on the same prompts, (2) checks that
their prompts match, (3) validates the judge on a labelled pairwise benchmark (its own accuracy with a
bootstrap interval, beside the "longer response wins" baseline), (4) judges every (output, reference)
pair (pairwise judges in both orders, averaged), and (5) computes the win rate (ties 1/2) with its
standard error and a bootstrap 95% interval, and the length-controlled win rate (AlpacaEval 2's GLM,
``finealign.core.winrate``).

Files in ``cfg.out`` (all written atomically; the judge's verdicts are cached per pair in
``judgments.jsonl`` so a killed or failed run resumes where it stopped):

* ``results.json``: ``win_rate``, ``win_rate_se``, ``win_rate_ci`` ([low, high]), ``lc_win_rate``,
  ``lc_win_rate_se``, ``n``, ``ties``, ``wins``, ``losses``, ``position_disagreement`` (fraction of
  pairs whose two orders point to different winners; ``null`` for order-free judges), ``judge``,
  ``judge_check`` (``accuracy``, ``ci_low``, ``ci_high``, ``n``, ``length_accuracy`` and its interval,
  ``evidence``: whether the interval excludes 0.5), ``warning`` and the settings. Rates are
  fractions in [0, 1] (``results.md`` shows percent).
* ``results.md``: the same as a short markdown report, with the judge warning when it applies.
* ``pairs.jsonl``: one line per prompt: ``prompt_id``, ``prompt``, ``output``, ``reference``,
  ``preference`` (credit of the model's output: 1 win, 0 loss, 1/2 tie; soft mode: a probability),
  ``p_output_first`` / ``p_reference_first`` (P(model's output better) with it shown first / second),
  ``disagree``, ``len_output``, ``len_reference``.
* ``outputs.jsonl`` / ``reference_outputs.jsonl``: generated outputs, when generated (resumable).
"""

from __future__ import annotations

from .winrate_config import JudgeCheck, ProgressFn, WinrateConfig, WinrateResult
from .winrate_run import joint_lc_win_rates as _joint, run as _run

__all__ = ["JudgeCheck", "WinrateConfig", "WinrateResult", "joint_lc_win_rates", "run_winrate"]


def run_winrate(cfg: WinrateConfig, on_progress: ProgressFn | None = None, *, judge=None,
                check_cache=None) -> WinrateResult:
    """Evaluate ``cfg.model`` (or ``cfg.outputs``) against the reference with ``cfg.judge``; write the report.

    Steps: read / generate both sides (generation through ``finealign.generation``, resumable into
    ``out/outputs.jsonl`` and ``out/reference_outputs.jsonl``), pair them by prompt, validate the judge
    on ``cfg.judge_check`` (skipped with ``"none"``), judge every pair (cached in
    ``out/judgments.jsonl``; a rerun with the same judge resumes, a different judge or judging setting
    is refused), compute win rate / SE / bootstrap CI and the length-controlled win rate, and write
    ``results.json``, ``results.md`` and ``pairs.jsonl`` atomically. ``on_progress(stage, done, total)``
    reports progress (see ``ProgressFn``); nothing is printed. ``judge``: an already built
    ``finealign.eval.judges.Judge`` to use instead of loading ``cfg.judge`` (``cfg.judge`` still names it
    in the cache and the report); it is not closed. ``check_cache``: a verdict cache file for the judge check
    shared by several win rates with the same judge and check set (a recipe's win-rate stages: the check is
    judged once), instead of ``out/judgments.jsonl``.

    Raises ``FinealignError`` for user errors: unreadable files (``DataError``), prompts that do not match
    between the two sides (the count and the first mismatch), a judge that fails or answers garbage after
    its retries (nothing half-written: the verdicts so far stay cached), a judge-check set that cannot
    be loaded.
    """
    return _run(cfg, on_progress, judge=judge, check_cache=check_cache)


def joint_lc_win_rates(out_dirs):
    """LC win rates of several runs against the same reference outputs, with the instruction-difficulty
    term estimated from all of them (see ``winrate_run.joint_lc_win_rates``); one ``LCWinRate`` per run."""
    return _joint(out_dirs)
