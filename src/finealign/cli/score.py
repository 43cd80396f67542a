"""``finealign score --scorer SPEC IN OUT``: add reward scores to every record of a file.

Response records (``prompt``/``completion``) get ``score``; pair records get ``score_chosen`` and
``score_rejected``; rating records (whose ``score`` is the human rating) get ``reward``. An FLR
scorer also adds its per-dimension scores (``flr_dims``, ``flr_dims_chosen``, ...). All other
fields are kept. The whole input is validated before anything is written; OUT is appended record
by record, so an interrupted run resumes where it stopped. Flags are generated from
:class:`~finealign.verbs.settings.ScoreConfig`; the verb runs through the verb table; this module prints.
"""

from __future__ import annotations

from pathlib import Path

# The library function lives in rewards/score_file.py (the pipeline runs it too); names kept here.
from ..rewards.score_file import score_file  # noqa: F401
from ..verbs.settings import ScoreConfig


def run_score(cfg: ScoreConfig, quiet: bool = False) -> None:
    from ..verbs import run_verb
    from .common import console, out as stdout, verb_hooks

    console.print(f"loading scorer {cfg.scorer_spec()} ...")
    with verb_hooks(quiet) as hooks:
        st = run_verb("score", cfg, hooks)
    stdout.print(f"{st['kind']} records: {st['records']}  scored now: {st['written']}  "
                 f"already done: {st['skipped']}  empty responses: {st.get('empty', 0)}  "
                 f"truncated contexts: {st['truncated']}  -> {Path(cfg.out)}",
                 soft_wrap=True, highlight=False)


def register(app, **_):
    from .options import command_from_row

    command_from_row(app, "score", run_score)
