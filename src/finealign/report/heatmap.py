"""Per-token reward heatmaps: a self-contained HTML page and a rich terminal rendering.

The renderer takes ``TokenScores`` (token ids, character offsets, rewards; ``rewards/base.py``)
and the text they score, so it works with any token scorer and with hand-made scores.

Colours are diverging around ``center`` (0 by default, or the median token reward): red for
rewards below it, blue above, white at it, saturating at ``center -/+ scale`` where ``scale`` is
the largest ``|reward - center|`` in the whole document, so colours compare across panels.
Tokens flagged as changed (the minimal edit's E_l / E_w from ``core.align``) are outlined.

Text to token segments: tokens usually tile the text, but byte-level BPE gives several tokens
the same character range (the bytes of one emoji) and ranges may overlap. Tokens are walked in
order; a token whose range is already shown joins the previous segment (rewards summed, all
listed in the tooltip); text not covered by any token is shown uncoloured. The stop token (the
zero-width unit ``(len, len)`` of the token-reward contract) is shown after the text as a coloured
return sign, so what a reward model says about stopping there is visible.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Sequence

from ..rewards.base import TokenScores

__all__ = ["HeatmapItem", "Panel", "Segment", "color_for", "render_html", "render_terminal", "segments"]

LOW = (214, 96, 77)  # reward far below center (red)
HIGH = (67, 147, 195)  # reward far above center (blue)
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Panel:
    """One scored response: ``title`` ("original", "chosen", ...), its ``text``, its
    ``scores`` and optional per-token ``changed`` flags (0/1, aligned with ``scores.token_ids``)."""

    title: str
    text: str
    scores: TokenScores
    changed: Sequence[int] | None = None

    def __post_init__(self):
        n = len(self.scores.rewards)
        if len(self.scores.offsets) != n:
            raise ValueError(f"panel {self.title!r}: {len(self.scores.offsets)} offsets for {n} rewards")
        if self.changed is not None and len(self.changed) != n:
            raise ValueError(f"panel {self.title!r}: {len(self.changed)} changed flags for {n} rewards")

    @property
    def total(self) -> float:
        return float(sum(self.scores.rewards))

    @property
    def mean(self) -> float:
        n = len(self.scores.rewards)
        return self.total / n if n else 0.0


@dataclass(frozen=True)
class HeatmapItem:
    """One record: its prompt (flattened to text) and one or more panels shown side by side.

    ``margin`` (optional): a label for the difference of panel sums, e.g. "edited − original".
    """

    prompt: str
    panels: tuple[Panel, ...]
    title: str = ""
    margin: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


class Segment(NamedTuple):
    """A piece of a panel's text: ``[start, end)``, the token ids and rewards shown on it
    (empty for uncovered text), and whether any of its tokens is flagged as changed."""

    start: int
    end: int
    token_ids: tuple[int, ...]
    rewards: tuple[float, ...]
    changed: bool

    @property
    def reward(self) -> float | None:
        return sum(self.rewards) if self.rewards else None


def segments(text: str, scores: TokenScores, changed: Sequence[int] | None = None) -> list[Segment]:
    """Cut ``text`` into segments covering it exactly once, in order (see the module docstring)."""
    n = len(text)
    out: list[Segment] = []
    cursor = 0
    for i, (off, tid, r) in enumerate(zip(scores.offsets, scores.token_ids, scores.rewards)):
        flag = bool(changed[i]) if changed is not None else False
        s, e = max(0, min(int(off[0]), n)), max(0, min(int(off[1]), n))
        if e == s == n and int(off[0]) == n:  # the stop unit (end of turn): shown as STOP_MARK after the text
            if cursor < n:
                out.append(Segment(cursor, n, (), (), False))
                cursor = n
            out.append(Segment(n, n, (tid,), (float(r),), flag))
            continue
        if e <= s or e <= cursor:  # empty, or already shown: joins the segment that covers it
            if e > s and out and out[-1].token_ids:
                last = out[-1]
                out[-1] = last._replace(token_ids=last.token_ids + (tid,), rewards=last.rewards + (float(r),),
                                        changed=last.changed or flag)
            continue
        if s > cursor:
            out.append(Segment(cursor, s, (), (), False))
        start = max(s, cursor)
        out.append(Segment(start, e, (tid,), (float(r),), flag))
        cursor = e
    if cursor < n:
        out.append(Segment(cursor, n, (), (), False))
    return out


def color_for(value: float, center: float, scale: float) -> tuple[int, int, int]:
    """RGB of ``value``: white at ``center``, LOW at ``center - scale``, HIGH at ``center + scale``."""
    if scale <= 0:
        return WHITE
    t = max(-1.0, min(1.0, (value - center) / scale))
    end = HIGH if t > 0 else LOW
    a = abs(t)
    return tuple(round(w + (c - w) * a) for w, c in zip(WHITE, end))  # type: ignore[return-value]


def _hex(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _center_scale(items: Sequence[HeatmapItem], center: float | str) -> tuple[float, float]:
    rewards = [float(r) for it in items for p in it.panels for r in p.scores.rewards]
    if center == "median":
        c = statistics.median(rewards) if rewards else 0.0
    elif isinstance(center, str):
        raise ValueError(f"center must be a number or 'median', got {center!r}")
    else:
        c = float(center)
    scale = max((abs(r - c) for r in rewards), default=0.0)
    return c, scale if scale > 0 else 1.0


# ---------------------------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#111;background:#fafafa}
h1{font-size:20px;margin:0 0 8px} .meta{color:#555;font-size:13px;margin-bottom:16px}
.legend{display:flex;align-items:center;gap:10px;font-size:13px;margin:8px 0 20px;flex-wrap:wrap}
.bar{width:240px;height:14px;border:1px solid #999}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 14px;margin-bottom:18px}
.item h2{font-size:15px;margin:0 0 6px} .prompt{white-space:pre-wrap;color:#333;font-size:13px;
background:#f3f3f3;padding:6px 8px;border-radius:4px;margin-bottom:10px;max-height:12em;overflow:auto}
.panels{display:grid;gap:14px} .panel h3{font-size:13px;margin:0 0 4px;color:#333}
.stats{font-size:12px;color:#555;margin-bottom:4px}
.text{white-space:pre-wrap;word-wrap:break-word;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;
line-height:1.9;border:1px solid #eee;padding:6px;border-radius:4px}
.t{border-radius:2px;box-shadow:inset -1px 0 0 rgba(0,0,0,.14)} .c{outline:2px solid #111;outline-offset:-1px}
.key{white-space:nowrap}
.note{font-size:12px;color:#8a5a00}
"""


STOP_MARK = "⏎"  # the stop token's segment: zero-width in the text, shown as a return sign


def _piece(text: str, seg: Segment) -> str:
    return STOP_MARK if seg.start == seg.end and seg.rewards else text[seg.start:seg.end]


def _span_html(text: str, seg: Segment, center: float, scale: float) -> str:
    piece = html.escape(_piece(text, seg))
    if not seg.rewards:
        return piece
    tip = f"reward {seg.reward:+.4f}"
    if len(seg.rewards) > 1:
        tip += " = " + " + ".join(f"{r:+.4f}" for r in seg.rewards)
    tip += "; token id" + ("s " if len(seg.token_ids) > 1 else " ") + ", ".join(map(str, seg.token_ids))
    if seg.changed:
        tip += "; changed"
    cls = "t c" if seg.changed else "t"
    return (f'<span class="{cls}" style="background:{_hex(color_for(seg.reward, center, scale))}" '
            f'title="{html.escape(tip, quote=True)}">{piece}</span>')


def _panel_html(p: Panel, center: float, scale: float) -> str:
    segs = segments(p.text, p.scores, p.changed)
    body = "".join(_span_html(p.text, s, center, scale) for s in segs)
    n = len(p.scores.rewards)
    stats = f"{n} tokens · sum {p.total:+.3f} · mean {p.mean:+.4f}"
    if p.changed is not None:
        stats += f" · {sum(1 for c in p.changed if c)} changed"
    return (f'<div class="panel"><h3>{html.escape(p.title)}</h3><div class="stats">{html.escape(stats)}</div>'
            f'<div class="text">{body}</div></div>')


def _legend_html(center: float, scale: float) -> str:
    stops = ", ".join(_hex(color_for(center + scale * k / 4, center, scale)) for k in range(-4, 5))
    return (f'<div class="legend"><span>{center - scale:+.3f}</span>'
            f'<span class="bar" style="background:linear-gradient(to right, {stops})"></span>'
            f'<span>{center + scale:+.3f}</span><span>(white = {center:+.3f}; red = lower reward, blue = higher; '
            f'summed over tokens sharing characters)</span>'
            f'<span class="key"><span class="t c" style="padding:0 4px">changed</span> = token changed by the edit</span>'
            f'<span>hover a token for its reward and id</span></div>')


def render_html(items: Sequence[HeatmapItem], *, title: str = "finealign: per-token rewards",
                subtitle: str = "", center: float | str = 0.0) -> str:
    """A self-contained HTML page (inline CSS, no scripts, all text escaped) with one block per item."""
    c, scale = _center_scale(items, center)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        parts.append(f'<div class="meta">{html.escape(subtitle)}</div>')
    parts.append(_legend_html(c, scale))
    for k, it in enumerate(items):
        head = it.title or f"#{k + 1}"
        if it.margin and len(it.panels) == 2:
            d = it.panels[1].total - it.panels[0].total
            head += f" · {it.margin}: {d:+.3f}"
        parts.append(f'<div class="item"><h2>{html.escape(head)}</h2>')
        parts.append(f'<div class="prompt">{html.escape(it.prompt)}</div>')
        for note in it.notes:
            parts.append(f'<div class="note">{html.escape(note)}</div>')
        parts.append(f'<div class="panels" style="grid-template-columns:repeat({len(it.panels)}, minmax(0, 1fr))">')
        parts.extend(_panel_html(p, c, scale) for p in it.panels)
        parts.append("</div></div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- terminal


def _panel_text(p: Panel, center: float, scale: float):
    from rich.text import Text

    t = Text()
    for seg in segments(p.text, p.scores, p.changed):
        piece = _piece(p.text, seg)
        if not seg.rewards:
            t.append(piece)
            continue
        style = f"#000000 on {_hex(color_for(seg.reward, center, scale))}"
        if seg.changed:
            style += " bold underline"
        t.append(piece, style=style)
    return t


def _shorten(text: str, n: int) -> str:
    """``text`` cut to about ``n`` characters: its start and end around " … "."""
    if n <= 0 or len(text) <= n:
        return text
    head = (2 * n) // 3
    return text[:head].rstrip() + " … " + text[len(text) - (n - head):].lstrip()


def render_terminal(items: Sequence[HeatmapItem], console=None, *, center: float | str = 0.0,
                    prompt_chars: int = 300) -> None:
    """Print the heatmap with rich: one table per item, a column per panel; changed tokens are
    bold and underlined. Prompts longer than ``prompt_chars`` show their start and end."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    c, scale = _center_scale(items, center)
    legend = Text("legend: ")
    for k in (-2, -1, 0, 1, 2):
        v = c + scale * k / 2
        legend.append(f" {v:+.2f} ", style=f"#000000 on {_hex(color_for(v, c, scale))}")
    legend.append("   ")
    legend.append("changed", style="bold underline")
    console.print(legend)
    for k, it in enumerate(items):
        head = it.title or f"#{k + 1}"
        if it.margin and len(it.panels) == 2:
            head += f"  {it.margin}: {it.panels[1].total - it.panels[0].total:+.3f}"
        table = Table(show_lines=False, expand=True)
        for p in it.panels:
            table.add_column(f"{p.title}  (sum {p.total:+.3f}, mean {p.mean:+.4f})", ratio=1)
        table.add_row(*[_panel_text(p, c, scale) for p in it.panels])
        console.rule(Text(head, style="bold"), align="left")
        console.print(Text("prompt: ", style="bold") + Text(_shorten(it.prompt, prompt_chars)))
        for note in it.notes:
            console.print(Text(note, style="yellow"))
        console.print(table)


def panels_from(titles: Iterable[str], texts: Iterable[str], scores: Iterable[TokenScores],
                changed: Iterable[Sequence[int] | None] | None = None) -> tuple[Panel, ...]:
    """Zip parallel lists into panels."""
    titles, texts, scores = list(titles), list(texts), list(scores)
    ch = list(changed) if changed is not None else [None] * len(titles)
    return tuple(Panel(t, x, s, c) for t, x, s, c in zip(titles, texts, scores, ch))
