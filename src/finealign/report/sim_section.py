"""The report's sim-testbed section (and ``python -m finealign.report.sim_section STUDY.json``: the same table
in Markdown, as the README shows it): gold reward per PPO step, token vs sequence level, from a sim study's
``study.json`` (``finealign.pipeline.sim_study``): one panel per task, the mean over seeds with a min..max
band per (reward, granularity), the target line, and a table of steps to the target, their ratio with its
interval, final gold, KL and length. Pure HTML + an inline PNG; no model is loaded."""

from __future__ import annotations

import html
import math
import statistics

__all__ = ["gold_curves_png", "markdown_table", "sim_section_html", "sim_table_rows"]

COLORS = {"token": "#2b6cb0", "sequence": "#dd6b20"}


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _mean_band(curves: list[list[dict]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps present in every curve, and the mean, min and max gold over the curves at each."""
    steps = sorted(set.intersection(*({o["step"] for o in c} for c in curves)))
    at = [{o["step"]: o["gold"] for o in c} for c in curves]
    vals = [[a[s] for a in at] for s in steps]
    return steps, [statistics.fmean(v) for v in vals], [min(v) for v in vals], [max(v) for v in vals]


def gold_curves_png(study: dict, rewards: tuple[str, ...] = ("gold",)) -> str:
    """Inline PNG: gold score per PPO step for each task (a panel), ``rewards`` x {token, sequence} (solid:
    gold reward, dashed: learned), mean over seeds with a min..max band, and the task's target (dotted)."""
    from .plots import _figure, _uri

    tasks = list(study["ppo"])
    plt, fig = _figure(4.2 * max(1, len(tasks)), 3.2)
    for i, task in enumerate(tasks, 1):
        ax = fig.add_subplot(1, len(tasks), i)
        for reward in rewards:
            for gran, color in COLORS.items():
                cs = [c["curve"] for c in study["ppo_curves"]
                      if c["task"] == task and c["reward"] == reward and c["granularity"] == gran and c["curve"]]
                if not cs:
                    continue
                steps, mean, lo, hi = _mean_band(cs)
                style = "-" if reward == "gold" else "--"
                ax.plot(steps, mean, style, color=color, linewidth=1.5, label=f"{reward}/{gran} ({len(cs)} seeds)")
                ax.fill_between(steps, lo, hi, color=color, alpha=0.15, linewidth=0)
        target = study["ppo"][task].get("target")
        if target is not None:
            ax.axhline(target, color="#444", linestyle=":", linewidth=1, label="target")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("PPO step", fontsize=8)
        ax.set_ylabel("gold score of the rollouts", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return _uri(plt, fig)


def sim_table_rows(study: dict) -> list[dict]:
    """One row per task and reward: steps to the target (token, sequence; reached counts), the sequence/token
    ratio with its bootstrap interval (``censored`` side named), final gold with interval, KL and length."""
    rows = []
    for task, s in study["ppo"].items():
        for reward in sorted({k.split("/")[0] for k in s["by_run"]}, key=lambda r: (r != "gold", r)):
            tok, seq = s["by_run"].get(f"{reward}/token"), s["by_run"].get(f"{reward}/sequence")
            ratio = (s.get("steps_ratio") or {}).get(reward)
            rows.append({"task": task, "reward": reward, "token": tok, "sequence": seq, "ratio": ratio,
                         "initial": s.get("initial_gold"), "target": s.get("target")})
    return rows


def _ratio_text(q: dict | None) -> str:
    if not q:
        return "n/a"
    return (_f(q["ratio"]) + (f" [{_f(q['ci'][0])}, {_f(q['ci'][1])}]" if q["ci"] else "")
            + (f" (censored: {', '.join(q['censored'])})" if q["censored"] else ""))


def _cell(g: dict | None) -> tuple[str, str, str]:
    if not g:
        return "n/a", "n/a", "n/a"
    ci = g.get("final_gold_ci")
    steps = _f(g.get("mean_steps_to_target"), 1) + f" ({g['reached']})"
    final = _f(g["final_gold"]) + (f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else "")
    return steps, final, f"{_f(g['final_kl'])} / {_f(g.get('final_length'), 1)}"


def sim_section_html(study: dict) -> str:
    """The section's HTML (plot, then the table), or a muted line when the study ran no PPO."""
    if not study.get("ppo"):
        return "<p class='muted'>The sim study ran no PPO.</p>"
    head = ("<tr><th>task</th><th>reward</th><th>steps to target: token</th><th>sequence</th>"
            "<th>ratio seq/token [95% CI]</th><th>final gold: token</th><th>sequence</th>"
            "<th>KL / length: token</th><th>sequence</th></tr>")
    body = []
    for r in sim_table_rows(study):
        (ts, tf, tk), (ss, sf, sk) = _cell(r["token"]), _cell(r["sequence"])
        ratio = _ratio_text(r["ratio"])
        body.append("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in (
            r["task"], r["reward"], ts, ss, ratio, tf, sf, tk, sk)) + "</tr>")
    note = ("<p class='muted'>Gold score of each PPO step's rollouts; target: half the gap from the first batch to "
            "the best gold-reward granularity's final value. A ratio above 1: token level reached it in fewer "
            "steps. Censored: some runs of that side never reached it (counted as run length + 1).</p>")
    return (f"<img alt='gold reward per PPO step, token vs sequence' src='{gold_curves_png(study)}'>"
            f"{note}<table>{head}{''.join(body)}</table>")


def markdown_table(study: dict) -> str:
    """The table of ``sim_section_html`` in Markdown: per task and reward, "does token level reach the target
    faster (ratio of steps, 95% interval), and does it end higher (final gold, 95% intervals)?"."""
    lines = ["| task | reward | steps to target: token / sequence (reached) | ratio seq/token [95% CI] "
             "| final gold: token | sequence | KL / length: token | sequence |", "|---|---|---|---|---|---|---|---|"]
    for r in sim_table_rows(study):
        (ts, tf, tk), (ss, sf, sk) = _cell(r["token"]), _cell(r["sequence"])
        ratio = _ratio_text(r["ratio"])
        lines.append(f"| {r['task']} | {r['reward']} | {ts} / {ss} | {ratio} | {tf} | {sf} | {tk} | {sk} |")
    notes = [f"- {task}: no target, so no steps (no gold-reward run ended above its first batch)"
             for task, t in sorted(study.get("ppo", {}).items()) if isinstance(t, dict) and t.get("target") is None]
    return "\n".join(lines + ([""] + notes if notes else []))


def main(argv: list[str] | None = None) -> str:
    """``python -m finealign.report.sim_section STUDY.json [--target-frac F]``: the Markdown table of a study's
    ``study.json``, its PPO runs summarised again with another target fraction when ``--target-frac`` is
    given (the same curves, another target: a sensitivity check of steps to target)."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m finealign.report.sim_section", description=main.__doc__)
    p.add_argument("study", help="a sim study's study.json")
    p.add_argument("--target-frac", type=float, help="summarise the PPO runs again with this fraction of the gap")
    a = p.parse_args(argv)
    study = json.loads(open(a.study, encoding="utf-8").read())
    if a.target_frac is not None:
        from ..studies.sim_summary import summarize_ppo

        study = {**study, "ppo": summarize_ppo(study["ppo_curves"], a.target_frac)}
    return markdown_table(study)


if __name__ == "__main__":
    print(main())
