"""The token RM's example encoder: minimal-edit pairs -> training/evaluation examples (chat-templated,
aligned, counted), beside the model in ``models.token_rm``.

A data source is a JSONL/JSON/CSV/Parquet file of edit records (``prompt/original/edited``) or the
name of a public edit data set (``defacto-train``, ``qa-feedback-edits``, ...), optionally sliced
with Python syntax: ``qa-feedback-edits[:400]``, ``data/edits.jsonl[100:]``.

Each kept pair becomes a ``PairExample``: both sides chat-templated with the prompt, response
tokens and their changed labels from ``core.align`` (the diff is on text, mapped onto each side's
token offsets inside the template). Pairs that cannot train are skipped and counted, never
silently: ``identical`` (edited == original), ``empty_side`` (an empty original or edited),
``no_change`` (a whitespace-only edit: no changed token on either side), ``too_long`` (a response
that does not fit ``max_length``), and, when asked (training does by default), ``not_minimal``: edits
the minimality guard flagged (``meta.minimality`` other than ``ok``, from ``finealign edit``). Over-long
prompts are cut from the left (oldest context first) and counted in ``truncated``.

Each side's response tokens include its stop token (end of turn, ``models.token_rm.encode_response``);
an edit that inserts after the original's last word (``core.align.inserts_at_end``) marks the
original's stop token as changed: it stopped too early.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from ..core.align import diff_char_spans, inserts_at_end, same_text, spans_to_token_labels
from ..data.records import EditRecord
from ..errors import FinealignError
from .token_rm import EncodedResponse, TooLong, encode_response, pad_batch

_SLICE = re.compile(r"^(?P<src>.+?)\[(?P<a>-?\d*):(?P<b>-?\d*)\]$")


@dataclass(frozen=True)
class SideExample:
    """One side of a pair: ``input_ids`` (T,), ``response_mask`` (T,), ``changed`` (T,) 0/1."""

    input_ids: list[int]
    response_mask: list[bool]
    changed: list[int]
    offsets: list[tuple[int, int]]


@dataclass(frozen=True)
class PairExample:
    edited: SideExample
    original: SideExample
    id: str | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.edited.input_ids) + len(self.original.input_ids)


class BuildStats(NamedTuple):
    records: int
    kept: int
    identical: int
    empty_side: int
    no_change: int
    too_long: int
    truncated: int
    not_minimal: int = 0
    not_minimal_names: tuple = ()  # record ids (or 1-based positions) of the flagged edits left out

    def summary(self) -> str:
        nm = f", {self.not_minimal} flagged by the minimality guard" if self.not_minimal else ""
        return (f"{self.kept}/{self.records} pairs kept; skipped: {self.identical} identical, {self.empty_side} "
                f"with an empty side, {self.no_change} whitespace-only, {self.too_long} over the context window{nm}; "
                f"{self.truncated} sequences had their oldest context truncated")


def load_edit_source(source: str) -> list[EditRecord]:
    """Edit records of one source: a file or a public data set name, optionally ``[a:b]``-sliced."""
    from ..data.adapters import DATASETS, load_dataset
    from ..data.io import read_records

    m = _SLICE.match(source.strip())
    src, sl = (m["src"], slice(int(m["a"]) if m["a"] else None, int(m["b"]) if m["b"] else None)) if m else (source, None)
    if Path(src).expanduser().exists():
        recs = read_records(Path(src).expanduser(), "edit")
    elif src in DATASETS:
        if DATASETS[src].kind != "edit":
            raise FinealignError(f"data set {src!r} holds {DATASETS[src].kind} records, not edits "
                                 f"(prompt/original/edited)")
        recs = load_dataset(src)
    else:
        raise FinealignError(f"{src}: no such file, and not a data set name "
                             f"({', '.join(n for n, d in DATASETS.items() if d.kind == 'edit')})")
    return list(recs[sl]) if sl is not None else list(recs)


def load_edit_sources(sources: Sequence[str]) -> list[EditRecord]:
    out: list[EditRecord] = []
    for s in sources:
        out.extend(load_edit_source(s))
    return out


def _side(enc: EncodedResponse, spans, text: str) -> SideExample:
    rel = [o if m else (0, 0) for o, m in zip(enc.offsets, enc.response_mask)]
    labels = spans_to_token_labels(rel, spans, text=text)
    return SideExample(enc.input_ids, enc.response_mask, labels, enc.offsets)


def _stop_changed(side: SideExample) -> SideExample:
    """``side`` with its stop token (its last response token) marked as changed."""
    k = max(j for j, m in enumerate(side.response_mask) if m)
    changed = list(side.changed)
    changed[k] = 1
    return SideExample(side.input_ids, side.response_mask, changed, side.offsets)


def build_pair_examples(records: Sequence[EditRecord], tokenizer, max_length: int, *,
                        skip_non_minimal: bool = False) -> tuple[list[PairExample], BuildStats]:
    """Examples of the usable pairs of ``records`` and the counts of what was skipped (module docstring).
    ``skip_non_minimal``: leave out the edits whose ``meta.minimality`` is set and not ``ok``."""
    out: list[PairExample] = []
    identical = empty = no_change = too_long = truncated = 0
    flagged: list[str] = []
    for pos, r in enumerate(records, 1):
        verdict = (r.meta or {}).get("minimality")
        if skip_non_minimal and verdict not in (None, "ok"):
            flagged.append(f"{r.id or f'#{pos}'} ({verdict})")
            continue
        if same_text(r.edited, r.original):  # equal up to Unicode normal form and outer whitespace
            identical += 1
            continue
        if not r.original.strip() or not r.edited.strip():
            empty += 1
            continue
        sa, sb = diff_char_spans(r.original, r.edited)
        try:
            ew = encode_response(tokenizer, r.prompt, r.edited, max_length)
            el = encode_response(tokenizer, r.prompt, r.original, max_length)
        except TooLong:
            too_long += 1
            continue
        w, l = _side(ew, sb, r.edited), _side(el, sa, r.original)
        if inserts_at_end(r.original, r.edited):
            l = _stop_changed(l)
        if not any(w.changed) and not any(l.changed):
            no_change += 1
            continue
        truncated += (ew.truncated > 0) + (el.truncated > 0)
        out.append(PairExample(w, l, r.id))
    return out, BuildStats(len(records), len(out), identical, empty, no_change, too_long, truncated,
                           len(flagged), tuple(flagged))


class PairBatch(NamedTuple):
    """B pairs as 2B right-padded rows: edited sides first (rows :B), then the originals (B:).

    ``input_ids``/``attention_mask`` (2B, T); ``response`` (2B, T) bool; ``changed`` (2B, T) bool.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response: torch.Tensor
    changed: torch.Tensor
    n_pairs: int


def collate_pairs(pairs: Sequence[PairExample], pad_id: int) -> PairBatch:
    sides = [p.edited for p in pairs] + [p.original for p in pairs]
    ids, att, (resp, chg) = pad_batch([s.input_ids for s in sides], pad_id,
                                      [s.response_mask for s in sides], [s.changed for s in sides])
    return PairBatch(ids, att, resp, chg & resp, len(pairs))
