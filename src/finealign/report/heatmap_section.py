"""The report's token-reward heatmap: a run's token reward model scores the initial and the trained
policy's answers to the same prompts, side by side (rendered by :mod:`finealign.report.heatmap`)."""

from __future__ import annotations

import json
from pathlib import Path

from .run_data import Run, Stage, samples, winrate_rows


def _token_rm(runs: list[Run]) -> Stage | None:
    for r in runs:
        for s in r.stages:
            if s.type == "train-token-rm" and s.status == "done":
                return s
    return None


def _texts(runs: list[Run], rm: Stage, n: int) -> list[tuple[object, list[tuple[str, str]], str]]:
    """Up to ``n`` (prompt, [(panel title, text)], item title): judged pairs of a win-rate stage of the
    token RM's own run (else any run), else responses of a generate stage."""
    rows = sorted(winrate_rows(runs), key=lambda r: not r["stage"].startswith(rm.run + "/"))
    for r in rows:
        got = samples(r, n)
        if got:
            return [(p.get("prompt"), [("before: initial policy", p.get("reference") or ""),
                                       (f"after: {r['stage']}", p.get("output") or "")], str(p.get("prompt_id", "")))
                    for p in got]
    for run in runs:
        for s in run.stages:
            f = s.dir / "responses.jsonl"
            if s.type == "generate" and f.is_file():
                rows = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines()[:n] if x.strip()]
                return [(o["prompt"], [("response", o.get("completion") or "")], str(o.get("id", ""))) for o in rows]
    return []


def heatmap_srcdoc(runs: list[Run], n: int, max_chars: int) -> str | None:
    """The heatmap page (self-contained HTML), or None when no run has a finished token reward model.

    Loads the token RM (``token-rm:DIR``) and scores each text; texts are cut to ``max_chars``.
    Raises ``FinealignError`` when the model cannot be loaded or scores nothing.
    """
    from ..data.records import prompt_text
    from ..rewards import load_scorer
    from .heatmap import HeatmapItem, Panel, render_html

    rm = _token_rm(runs)
    if rm is None:
        return None
    texts = [(p, [(t, x[:max_chars]) for t, x in panels if x.strip()], title) for p, panels, title in _texts(runs, rm, n)]
    texts = [t for t in texts if t[1]]
    if not texts:
        return None
    scorer = load_scorer(f"token-rm:{Path(rm.dir)}")
    try:
        items = []
        for prompt, panels, title in texts:
            scores = scorer.score_tokens([prompt] * len(panels), [x for _, x in panels])
            ps = tuple(Panel(t, x, s) for (t, x), s in zip(panels, scores))
            items.append(HeatmapItem(prompt=prompt_text(prompt), panels=ps, title=title,
                                     margin="after − before" if len(ps) == 2 else None))
    finally:
        close = getattr(scorer, "close", None)
        if close:
            close()
    return render_html(items, title=f"per-token rewards of {rm.label}",
                       subtitle=f"token reward model {rm.dir}; red = lower reward, blue = higher")
