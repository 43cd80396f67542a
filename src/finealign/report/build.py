"""``finealign report RUN_DIR``: one self-contained HTML page of one or more runs.

Sections: summary, stages run and their settings, reward accuracy beside the length baseline, the
judge's validation, training curves (loss, reward, KL), a token-reward heatmap of a few responses
(initial policy vs trained policy, scored by the run's token reward model), win rates with their 95%
intervals, and sample outputs before and after. Images are inline PNGs (base64), the heatmap an
inline ``srcdoc`` frame: the page loads nothing from the network.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Callable

from ..errors import FinealignError
from . import plots
from .run_data import Run, curves, load_run, reward_rows, samples, winrate_rows
from .sim_section import sim_section_html

TRAIN_TYPES = ("train-dpo", "train-kto", "train-ppo", "train-token-rm", "train-followup-sft")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a202c;background:#f7fafc}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 6px} .meta{color:#4a5568;font-size:13px}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:6px 0 10px}
th,td{border:1px solid #e2e8f0;padding:4px 8px;text-align:left;vertical-align:top} th{background:#edf2f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fffaf0;border-left:4px solid #dd6b20;padding:8px 12px;margin:8px 0;font-size:13px}
.ok{color:#2f855a} .bad{color:#c53030} .muted{color:#718096}
.summary li{margin:3px 0} img{max-width:100%;background:#fff;border:1px solid #e2e8f0}
pre{font-size:12px;background:#fff;border:1px solid #e2e8f0;padding:6px;overflow:auto;max-height:18em;margin:4px 0;
white-space:pre-wrap;word-break:break-word;max-width:520px}
.pair{display:grid;gap:10px;margin-bottom:14px}
.box{background:#fff;border:1px solid #e2e8f0;border-radius:4px;padding:8px;font-size:13px;white-space:pre-wrap}
.prompt{background:#edf2f7;padding:6px 8px;border-radius:4px;font-size:13px;white-space:pre-wrap;margin:10px 0 4px}
iframe{width:100%;height:560px;border:1px solid #e2e8f0;background:#fff}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _f(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{nd}f}" if isinstance(x, (int, float)) else _e(x)


def _ci(ci) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]" if ci and ci[0] is not None else "—"


def _cut(text: str, n: int) -> str:
    text = text or ""
    return text if len(text) <= n else text[:n].rstrip() + " …"


def _rounded(v):
    """Floats to 4 significant digits, inside lists and mappings (for display)."""
    if isinstance(v, float):
        return float(f"{v:.4g}")
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    if isinstance(v, dict):
        return {k: _rounded(x) for k, x in v.items()}
    return v


def _prompt_text(p) -> str:
    if isinstance(p, list):
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in p if isinstance(m, dict))
    return str(p)


# ---------------------------------------------------------------------------------------------- summary


def lc_text(r: dict, nd: int = 2) -> str:
    """The LC win rate of a ``results.json`` as the report shows it: the number, ``NN (unstable)``, or
    ``not estimable`` (older results without ``lc_status`` show the number)."""
    status = r.get("lc_status") or "ok"
    if status == "not estimable":
        return "not estimable"
    return _f(r.get("lc_win_rate"), nd) + ("" if status == "ok" else f" ({status})")


def summary_lines(runs: list[Run]) -> list[str]:
    """Short plain-text lines: each win rate with its interval and the judge's accuracy, each reward
    accuracy beside its length baseline. Used at the top of the report and by the quickstart."""
    from ..eval.judge_orders import paths_summary

    lines = []
    for r in winrate_rows(runs):
        chk = r.get("judge_check") or {}
        judge = f"judge {r.get('judge')}"
        if chk:
            judge += (f" (own accuracy {_f(chk.get('accuracy'), 2)} [{_f(chk.get('ci_low'), 2)}, "
                      f"{_f(chk.get('ci_high'), 2)}]{'' if chk.get('evidence') else ': not evidence'})")
        ci = r.get("win_rate_ci") or [None, None]
        lines.append(f"{r['stage']}: win rate vs initial {_f(r.get('win_rate'), 2)} [{_f(ci[0], 2)}, {_f(ci[1], 2)}], "
                     f"LC {lc_text(r)}, n={r.get('n')}; {judge}; {paths_summary(r.get('judge_paths'))}")
    for r in reward_rows(runs):
        ci = r["ci"] or [None, None]
        lines.append(f"{r['stage']}: {r['scorer']} pairwise accuracy {_f(r['value'], 2)} [{_f(ci[0], 2)}, {_f(ci[1], 2)}] "
                     f"vs longer-wins {_f(r['length'], 2)} on {r['benchmark']} (n={r['n']})")
    return lines


# ---------------------------------------------------------------------------------------------- sections


def _stages_html(runs: list[Run]) -> str:
    parts = []
    for r in runs:
        parts.append(f"<h3>{_e(r.name)} <span class='muted'>(scale {_e(r.scale)}; {_e(r.dir)})</span></h3>")
        if r.description:
            parts.append(f"<div class='meta'>{_e(r.description)}</div>")
        parts.append("<table><tr><th>stage</th><th>type</th><th>status</th><th>seconds</th><th>summary</th>"
                     "<th>settings</th></tr>")
        for s in r.stages:
            m = s.marker
            cls = "ok" if s.status == "done" else "bad"
            summ = json.dumps(_rounded(m.get("summary") or {}), default=str)
            sett = json.dumps(m.get("settings") or {}, indent=1, sort_keys=True, default=str)
            parts.append(f"<tr><td>{_e(s.name)}</td><td>{_e(s.type)}</td><td class='{cls}'>{_e(s.status)}</td>"
                         f"<td class='num'>{_f(m.get('seconds'), 1)}</td><td><pre>{_e(_cut(summ, 400))}</pre></td>"
                         f"<td><details><summary>{len(m.get('settings') or {})} settings</summary>"
                         f"<pre>{_e(sett)}</pre></details></td></tr>")
        parts.append("</table>")
    return "\n".join(parts)


def _rewards_html(runs: list[Run]) -> str:
    rows = reward_rows(runs)
    if not rows:
        return "<p class='muted'>No reward evaluation in these runs (add an eval-rm stage).</p>"
    out = ["<table><tr><th>stage</th><th>reward</th><th>benchmark</th><th>n</th><th>accuracy</th><th>95% CI</th>"
           "<th>longer wins</th><th>95% CI</th></tr>"]
    for r in rows:
        out.append(f"<tr><td>{_e(r['stage'])}</td><td>{_e(r['scorer'])}</td><td>{_e(r['benchmark'])}</td>"
                   f"<td class='num'>{_e(r['n'])}</td><td class='num'>{_f(r['value'])}</td><td>{_ci(r['ci'])}</td>"
                   f"<td class='num'>{_f(r['length'])}</td><td>{_ci(r['length_ci'])}</td></tr>")
    out.append("</table>")
    out.append(f"<img alt='reward accuracy' src='{plots.accuracy_png(rows)}'>")
    return "\n".join(out)


def _judge_html(rows: list[dict]) -> str:
    if not rows:
        return "<p class='muted'>No win-rate evaluation in these runs.</p>"
    out = ["<table><tr><th>stage</th><th>judge</th><th>checked on</th><th>n</th><th>judge accuracy</th>"
           "<th>95% CI</th><th>longer wins</th><th>evidence</th></tr>"]
    warnings: dict[str, list[str]] = {}
    for r in rows:
        c = r.get("judge_check") or {}
        ev = c.get("evidence")
        ev_s = "yes" if ev else ("no: interval includes 0.5" if ev is False else "not checked")
        out.append(f"<tr><td>{_e(r['stage'])}</td><td>{_e(r.get('judge'))}</td><td>{_e(c.get('benchmark'))}</td>"
                   f"<td class='num'>{_e(c.get('n'))}</td><td class='num'>{_f(c.get('accuracy'))}</td>"
                   f"<td>{_ci([c.get('ci_low'), c.get('ci_high')])}</td><td class='num'>{_f(c.get('length_accuracy'))}</td>"
                   f"<td class='{'ok' if ev else 'bad'}'>{_e(ev_s)}</td></tr>")
        if r.get("warning"):
            warnings.setdefault(r["warning"], []).append(r["stage"])
    out.append("</table>")
    out += [f"<div class='warn'><b>{_e(', '.join(st))}:</b> {_e(w)}</div>" for w, st in warnings.items()]
    return "\n".join(out)


def _curves_html(runs: list[Run]) -> str:
    out = []
    for r in runs:
        for s in r.stages:
            if s.type in TRAIN_TYPES and s.status in ("done", "incomplete"):
                series = curves(s)
                if series:
                    out.append(f"<img alt='training curves of {_e(s.label)}' "
                               f"src='{plots.curves_png(f'{s.label} ({s.type})', series)}'>")
    return "\n".join(out) or "<p class='muted'>No training logs in these runs.</p>"


def _winrates_html(rows: list[dict]) -> str:
    if not rows:
        return "<p class='muted'>No win-rate evaluation in these runs.</p>"
    out = [f"<img alt='win rates' src='{plots.winrate_png(rows)}'>",
           "<table><tr><th>stage</th><th>win rate</th><th>95% CI</th><th>SE</th><th>LC win rate</th><th>n</th>"
           "<th>wins / ties / losses</th><th>order disagreement</th><th>judge verdicts: log-prob / parsed / tie"
           "</th></tr>"]
    for r in rows:
        paths = r.get("judge_paths") or {}
        how = (" / ".join(str(paths.get(k, 0)) for k in ("logprob", "parsed", "tie"))
               + (f" (+{paths['score']} score)" if paths.get("score") else "")) if paths else "n/a"
        lc_title = f" title='{_e(r.get('lc_warning'))}'" if r.get("lc_warning") else ""
        out.append(f"<tr><td>{_e(r['stage'])}</td><td class='num'>{_f(r.get('win_rate'))}</td>"
                   f"<td>{_ci(r.get('win_rate_ci'))}</td><td class='num'>{_f(r.get('win_rate_se'))}</td>"
                   f"<td class='num'{lc_title}>{_e(lc_text(r, 3))}</td><td class='num'>{_e(r.get('n'))}</td>"
                   f"<td>{_e(r.get('wins'))} / {_e(r.get('ties'))} / {_e(r.get('losses'))}</td>"
                   f"<td class='num'>{_f(r.get('position_disagreement'), 2)}</td><td>{_e(how)}</td></tr>")
    out.append("</table><p class='meta'>Win rate: share of prompts where the trained policy's answer is preferred "
               "to the initial policy's (ties count 1/2). Grey bars: the judge's own accuracy interval includes "
               "0.5, so its verdicts are not evidence. Judge verdicts: ordered comparisons read from the answer "
               "letter's log-probabilities, parsed from the reply text, or explicit ties (both / neither / "
               "refusals); LC win rate <i>not estimable</i>: the length GLM has no finite fit (separation), see "
               "the warning.</p>")
    out += [f"<div class='warn'><b>{_e(r['stage'])}:</b> {_e(r['lc_warning'])}</div>" for r in rows
            if r.get("lc_warning")]
    return "\n".join(out)


def _samples_html(rows: list[dict], n: int, max_chars: int) -> str:
    """Per run: the first ``n`` prompts, the initial policy's answer and each trained policy's answer."""
    by_run: dict[str, list[dict]] = {}
    for r in rows:
        by_run.setdefault(r["stage"].split("/")[0], []).append(r)
    out = []
    for run, rs in by_run.items():
        got = [(r, {str(p.get("prompt_id")): p for p in samples(r, n)}) for r in rs]
        first = next((g for _, g in got if g), {})
        if not first:
            continue
        out.append(f"<h3>{_e(run)}</h3>")
        for pid, p0 in first.items():
            cells = [f"<div class='box'><b>before: initial policy</b>\n{_e(_cut(p0.get('reference', ''), max_chars))}</div>"]
            for r, g in got:
                p = g.get(pid)
                if p is None:
                    continue
                pref = p.get("preference")
                verdict = "—" if pref is None else ("after preferred" if pref > 0.5 else
                                                    "before preferred" if pref < 0.5 else "tie")
                cells.append(f"<div class='box'><b>after: {_e(r['stage'].split('/')[-1])}</b> · judge: {_e(verdict)}\n"
                             f"{_e(_cut(p.get('output', ''), max_chars))}</div>")
            out.append(f"<div class='prompt'>{_e(_cut(_prompt_text(p0.get('prompt')), 400))}</div>"
                       f"<div class='pair' style='grid-template-columns:repeat({len(cells)}, minmax(0, 1fr))'>"
                       + "".join(cells) + "</div>")
    return "\n".join(out) or "<p class='muted'>No judged samples in these runs.</p>"


def _heatmap_html(runs: list[Run], n: int, max_chars: int, log) -> str:
    from .heatmap_section import heatmap_srcdoc

    if n <= 0:
        return "<p class='muted'>Heatmap turned off.</p>"
    try:
        doc = heatmap_srcdoc(runs, n, max_chars)
    except FinealignError as e:
        log(f"report: no heatmap ({e})")
        return f"<p class='muted'>No heatmap: {_e(e)}</p>"
    if doc is None:
        return "<p class='muted'>No token reward model in these runs (add a train-token-rm stage).</p>"
    return f"<iframe title='token-reward heatmap' srcdoc=\"{html.escape(doc, quote=True)}\"></iframe>"


# ---------------------------------------------------------------------------------------------- page


def build_report(run_dirs: list[str | Path], out: str | Path, *, title: str | None = None, samples: int = 3,
                 heatmap: int = 3, max_chars: int = 1200, log: Callable[[str], None] = lambda m: None,
                 sim_study: dict | None = None) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (an .html file, atomically); returns its path.

    ``samples``: judged pairs shown per win-rate stage; ``heatmap``: responses shown in the token-reward
    heatmap (0: none; it loads the run's token reward model); ``max_chars``: longest text shown;
    ``sim_study``: a sim study's ``study.json`` dict, shown first after the summary (gold curves, token vs
    sequence: ``report.sim_section``).
    Raises ``FinealignError`` when a folder holds no run.
    """
    from .. import __version__
    from ..data.io import write_text_atomic

    runs = [load_run(d) for d in run_dirs]
    title = title or "finealign report: " + ", ".join(r.name for r in runs)
    wr = winrate_rows(runs)
    lines = summary_lines(runs)
    summary = "".join(f"<li>{_e(s)}</li>" for s in lines) or "<li>No evaluations yet.</li>"
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<div class='meta'>finealign {_e(__version__)} · written {_e(time.strftime('%Y-%m-%d %H:%M'))} · runs: "
        f"{_e(', '.join(f'{r.name} (scale {r.scale})' for r in runs))}</div>",
        f"<h2 id='summary'>Summary</h2><ul class='summary'>{summary}</ul>",
        *([f"<h2 id='sim'>Token vs sequence level on the sim testbed (gold reward)</h2>{sim_section_html(sim_study)}"]
          if sim_study else []),
        f"<h2 id='winrates'>Win rates vs the initial policy</h2>{_winrates_html(wr)}",
        f"<h2 id='judge'>Judge validation</h2>{_judge_html(wr)}",
        f"<h2 id='rewards'>Reward accuracy (with the length baseline)</h2>{_rewards_html(runs)}",
        f"<h2 id='curves'>Training curves</h2>{_curves_html(runs)}",
        f"<h2 id='heatmap'>Token-reward heatmap</h2>{_heatmap_html(runs, heatmap, max_chars, log)}",
        f"<h2 id='samples'>Sample outputs before and after</h2>{_samples_html(wr, samples, max_chars)}",
        f"<h2 id='stages'>Stages and settings</h2>{_stages_html(runs)}",
    ]
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")
    return write_text_atomic(out, page)
