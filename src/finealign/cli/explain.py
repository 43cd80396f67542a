"""``finealign explain --token-rm PATH IN OUT.html``: per-token rewards as a colour heatmap.

IN is an edit file (``prompt/original/edited``: original and edited side by side, the tokens the
edit changed outlined), a pair file (``prompt/chosen/rejected``: rejected and chosen side by
side), or a response file (``prompt/completion``, also KTO and rating files: one panel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, non_negative, positive, setting
from ..errors import ConfigError, FinealignError

_SPEC_RE = re.compile(r"^[a-z][a-z0-9_-]*:")


def scorer_spec(token_rm: str) -> str:
    """``--token-rm`` value -> scorer spec: an existing path (or any value without a ``kind:``
    prefix) becomes ``token-rm:VALUE``; ``kind:arg,...`` is passed through as a spec."""
    if Path(token_rm.split(",")[0]).exists() or not _SPEC_RE.match(token_rm):
        return f"token-rm:{token_rm}"
    return token_rm


def build_items(records, scorer, *, diff: bool | None = None, batch_size: int = 8, progress=None):
    """Score the records' responses with ``scorer.score_tokens`` and build heatmap items.

    ``diff``: outline changed tokens (default: for edit records only; pairs with ``diff=True``).
    Returns ``(items, skipped)``: ``skipped`` lists ``(record index, reason)`` for records the
    scorer refused (a ``FinealignError`` such as a response over its context window); the
    others are still rendered.
    """
    from ..core.align import diff_char_spans, inserts_at_end, spans_to_token_labels
    from ..data.records import EditRecord, KTORecord, PairRecord, RatingRecord, ResponseRecord, prompt_text
    from ..report.heatmap import HeatmapItem, Panel

    layout = []  # per record: (titles, texts, margin label, outline?)
    for r in records:
        if isinstance(r, EditRecord):
            layout.append((("original", "edited"), (r.original, r.edited), "edited − original", diff is not False))
        elif isinstance(r, PairRecord):
            layout.append((("rejected", "chosen"), (r.rejected, r.chosen), "chosen − rejected", bool(diff)))
        elif isinstance(r, (ResponseRecord, KTORecord)):
            title = "response" if isinstance(r, ResponseRecord) else f"response (label {str(r.label).lower()})"
            layout.append(((title,), (r.completion,), None, False))
        elif isinstance(r, RatingRecord):
            layout.append(((f"response (score {r.score:g})",), (r.response,), None, False))
        else:
            raise FinealignError(f"explain needs edit, pair or response records, got {r.kind} records")
    prompts, texts = [], []
    for r, (_, tx, _, _) in zip(records, layout):
        prompts.extend([r.prompt] * len(tx))
        texts.extend(tx)
    owner = [n for n, (_, tx, _, _) in enumerate(layout) for _ in tx]
    scores: list = [None] * len(texts)
    skipped: dict[int, str] = {}  # record number -> why it could not be scored
    for i in range(0, len(texts), batch_size):
        idx = list(range(i, min(i + batch_size, len(texts))))
        try:
            got = _score(scorer, [prompts[j] for j in idx], [texts[j] for j in idx])
        except FinealignError:
            got = []
            for j in idx:  # find the response(s) that failed (e.g. over the context window); keep the rest
                try:
                    got.extend(_score(scorer, [prompts[j]], [texts[j]]))
                except FinealignError as e:
                    got.append(None)
                    skipped.setdefault(owner[j], str(e))
        for j, g in zip(idx, got):
            scores[j] = g
        if progress is not None:
            progress(len(idx))
    items, k = [], 0
    for n, (r, (titles, tx, margin, outline)) in enumerate(zip(records, layout)):
        sc = scores[k:k + len(tx)]
        k += len(tx)
        if n in skipped:
            continue
        for s, t in zip(sc, tx):
            if not (len(s.token_ids) == len(s.offsets) == len(s.rewards)):
                raise FinealignError(f"record {n + 1}: token scorer returned {len(s.token_ids)} ids, "
                                     f"{len(s.offsets)} offsets, {len(s.rewards)} rewards")
        changed: list = [None] * len(tx)
        notes = []
        if outline and len(tx) == 2:
            sa, sb = diff_char_spans(tx[0], tx[1])
            changed = [spans_to_token_labels(sc[0].offsets, sa, text=tx[0]),
                       spans_to_token_labels(sc[1].offsets, sb, text=tx[1])]
            stop = (len(tx[0]), len(tx[0]))
            if inserts_at_end(tx[0], tx[1]) and sc[0].offsets and tuple(sc[0].offsets[-1]) == stop:
                changed[0][-1] = 1  # the original stopped too early: its stop token is changed (as in training)
            if not sa and not sb:
                notes.append("the two texts differ only in whitespace or not at all: no changed tokens")
        cut = [t for t, s in zip(tx, sc) if s.offsets and max(e for _, e in s.offsets) < len(t.rstrip())]
        if cut:
            notes.append("some text was not scored (cut at the scorer's context window)")
        title = f"#{n + 1}" + (f" · {r.id}" if getattr(r, "id", None) else "")
        items.append(HeatmapItem(prompt=prompt_text(r.prompt), title=title, margin=margin, notes=tuple(notes),
                                 panels=tuple(Panel(ti, t, s, c) for ti, t, s, c in zip(titles, tx, sc, changed))))
    return items, sorted(skipped.items())


def _score(scorer, prompts, texts):
    got = scorer.score_tokens(prompts, texts)
    if len(got) != len(texts):
        raise FinealignError(f"token scorer returned {len(got)} results for {len(texts)} responses")
    return got


def explain(token_rm: str, inp: Path, out_html: Path, *, limit: int | None = 20, terminal: bool = False,
            diff: bool | None = None, center: str = "zero", batch_size: int = 8, quiet: bool = False) -> dict:
    """Score, render and write the heatmap; returns a small summary."""
    from ..data.io import read_records, write_text_atomic
    from ..report.heatmap import render_html, render_terminal
    from ..rewards.base import TokenScorer, load_scorer
    from .common import console, out, progress

    if limit is not None and limit < 1:
        raise FinealignError(f"--limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise FinealignError(f"--batch-size must be at least 1, got {batch_size}")
    if center not in ("zero", "median"):
        try:
            center_v: float | str = float(center)
        except ValueError:
            raise FinealignError(f"--center must be zero, median or a number, got {center!r}") from None
    else:
        center_v = 0.0 if center == "zero" else "median"
    records = read_records(inp)
    if not records:
        raise FinealignError(f"{inp}: no records")
    total = len(records)
    records = records[:limit] if limit else records
    scorer = load_scorer(scorer_spec(token_rm))
    if not isinstance(scorer, TokenScorer) and not hasattr(scorer, "score_tokens"):
        raise FinealignError(f"{token_rm}: scorer {getattr(scorer, 'name', type(scorer).__name__)!r} gives no per-token rewards")
    n_texts = sum(2 if r.kind in ("edit", "pair") else 1 for r in records)
    try:
        with progress(disable=quiet) as p:
            task = p.add_task("scoring tokens", total=n_texts, info="")
            items, skipped = build_items(records, scorer, diff=diff, batch_size=batch_size,
                                         progress=lambda n: p.advance(task, n))
    finally:
        scorer.close()
    for n, why in skipped:
        console.print(f"[yellow]record {n + 1} skipped:[/] {why}", markup=True, highlight=False)
    if not items:
        raise FinealignError(f"{inp}: none of the {len(records)} records could be scored ({skipped[0][1]})")
    sub = f"token scorer: {scorer_spec(token_rm)} · input: {inp} · {len(items)} of {total} records"
    if skipped:
        sub += f" · {len(skipped)} skipped (record {', '.join(str(n + 1) for n, _ in skipped)}: could not be scored)"
    write_text_atomic(out_html, render_html(items, subtitle=sub, center=center_v))
    if terminal:
        render_terminal(items, out, center=center_v)
    n_tok = sum(len(p.scores.rewards) for it in items for p in it.panels)
    if not quiet:
        console.print(f"wrote {out_html}: {len(items)} records, {n_tok} tokens" + (f", {len(skipped)} skipped" if skipped else ""))
    return {"path": str(out_html), "records": len(items), "skipped": len(skipped), "tokens": n_tok}


@dataclass(kw_only=True)
class ExplainConfig(Settings):
    """Render per-token rewards of a token reward model as a colour heatmap (HTML, optionally terminal)."""

    input: str = setting(None, positional=True, required=True, metavar="IN",
                         help="Edit (prompt/original/edited), pair or response file.")
    out: str = setting(None, positional=True, required=True, metavar="OUT.html", help="HTML file to write.")
    token_rm: str = setting(None, required=True, help="Token reward model directory (or a token scorer spec such as "
                                                      "token-rm:DIR,pool=mean).")
    limit: int = setting(20, short="-n", check=non_negative, help="Render the first N records (0 = all).")
    terminal: bool = setting(False, help="Also print the heatmap to the terminal.")
    diff: bool | None = setting(None, help="Outline changed tokens (default: edits yes, pairs no).")
    center: str = setting("zero", help="Reward shown white: zero, median or a number.")
    batch_size: int = setting(8, check=positive, help="Responses per scoring call.")

    def validate(self):
        if self.center not in ("zero", "median"):
            try:
                float(self.center)
            except ValueError:
                raise ConfigError("center", f"must be zero, median or a number, got {self.center!r}") from None


def run_explain(cfg: ExplainConfig, quiet: bool = False) -> dict:
    return explain(cfg.token_rm, Path(cfg.input), Path(cfg.out), limit=cfg.limit or None, terminal=cfg.terminal,
                   diff=cfg.diff, center=cfg.center, batch_size=cfg.batch_size, quiet=quiet)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "explain", ExplainConfig, run_explain)
