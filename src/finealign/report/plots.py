"""Report figures with matplotlib (Agg backend), returned as inline ``data:image/png;base64`` URIs."""

from __future__ import annotations

import base64
import io
import math


def _figure(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(w, h), dpi=100)


def _uri(plt, fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def curves_png(title: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """One row of small line plots, one per series ({"loss (loss)": [(step, value)], ...})."""
    plt, fig = _figure(3.4 * max(1, len(series)), 2.6)
    for i, (name, pts) in enumerate(series.items(), 1):
        ax = fig.add_subplot(1, len(series), i)
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if len(pts) < 12 else None, markersize=3, linewidth=1.4, color="#2b6cb0")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _uri(plt, fig)


def winrate_png(rows: list[dict]) -> str:
    """Horizontal bars: win rate vs the reference with its 95% interval, LC win rate as a diamond,
    a line at 0.5 (no difference). ``rows``: results.json dicts with a ``stage`` label."""
    plt, fig = _figure(7.0, 0.9 + 0.55 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    labels = [r["stage"] for r in rows]
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        wr = r.get("win_rate")
        ci = r.get("win_rate_ci") or [None, None]
        evidence = ((r.get("judge_check") or {}).get("evidence") is not False)
        color = "#2b6cb0" if evidence else "#a0aec0"
        if wr is not None:
            err = None
            if ci[0] is not None and ci[1] is not None:
                err = [[max(0.0, wr - ci[0])], [max(0.0, ci[1] - wr)]]
            ax.barh(y, wr, color=color, height=0.55, xerr=err, capsize=4, error_kw={"elinewidth": 1.2})
            ax.text(min(wr + 0.02, 0.93), y + 0.3, f"{wr:.2f}", fontsize=8, va="center")
        lc = r.get("lc_win_rate")
        if isinstance(lc, (int, float)) and not math.isnan(lc):
            ax.plot([lc], [y], marker="D", color="#dd6b20", markersize=6, linestyle="none")
    ax.axvline(0.5, color="#444", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("win rate vs reference (bar, 95% interval); diamond: length-controlled", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    return _uri(plt, fig)


def accuracy_png(rows: list[dict]) -> str:
    """Grouped bars: each reward's pairwise accuracy (with interval) beside the length baseline."""
    plt, fig = _figure(7.0, 0.9 + 0.6 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        for off, key, ci_key, color in ((0.17, "value", "ci", "#2b6cb0"), (-0.17, "length", "length_ci", "#a0aec0")):
            v = r.get(key)
            if v is None:
                continue
            ci = r.get(ci_key)
            err = [[max(0.0, v - ci[0])], [max(0.0, ci[1] - v)]] if ci else None
            ax.barh(y + off, v, height=0.32, color=color, xerr=err, capsize=3)
    ax.axvline(0.5, color="#444", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['scorer']} ({r['stage']})" for r in rows], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("pairwise accuracy (blue: reward, grey: longer-response-wins baseline)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    return _uri(plt, fig)
