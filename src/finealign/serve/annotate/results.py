"""What the annotation database holds, as training data (:func:`export_records`) and as numbers
(:func:`compute_stats`: counts, per-annotator throughput, agreement on overlapping items).

Export: one minimal-edit record ``prompt/original/edited/meta`` per person and item: their latest
submitted edit (edit mode) or accepted / corrected LLM edit (review mode), the format ``finealign train
token-rm`` reads; earlier submissions stay in the database's history (``AnnotationStore.submissions``). A
rejected LLM edit, a skip and a flag-only skip carry no edit and are not exported (a skip replaces a
submitted edit only when the person confirmed it). ``meta`` holds
``annotator``, ``seconds`` (time on the item, summed over resubmissions), ``flags`` (list of
reasons), ``mode``, ``item`` (the item key), ``edit_ratio`` and ``minimality`` (the guard of
``edits.minimality``), ``submissions``, ``submitted_at`` (UTC ISO 8601); edit mode adds ``worse``
(which response was edited) and ``flipped``; review mode adds ``decision`` (accept | correct) and
``llm_edit`` (the LLM's edit the person started from); ``source_meta`` is the input record's meta.
The record id is ``ITEM_KEY@ANNOTATOR``, unique even when several people annotated one item.

Agreement (items annotated by two or more people, pairwise over annotators):

* ``worse_agreement``: share of pairs that picked the same worse response (edit mode);
* ``decision_agreement``: share of pairs with the same review decision (review mode);
* ``edit_jaccard``: mean Jaccard overlap of the two people's edited sets, over pairs that edited
  the same original. An edited set is the original's word units (``core.align.diff_units``, the
  units the token labels are diffed on) that were replaced or deleted, plus the gaps where words
  were inserted; two edits that change nothing in the original both give the empty set (overlap 1).
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timezone
from itertools import combinations
from typing import Sequence

from ...core.align import diff_units
from .store import AnnotationStore, rows_by_item

__all__ = ["compute_stats", "edit_unit_set", "export_records", "jaccard"]


def edit_unit_set(original: str, edited: str) -> frozenset:
    """The edited set of ``original``: ``("w", i)`` for each replaced/deleted word unit ``i``,
    ``("gap", i)`` for words inserted before unit ``i``.

    Example: ``"the cat sat"`` -> ``"the dog sat down"``: ``{("w", 1), ("gap", 3)}``.
    """
    _, _, ops = diff_units(original, edited)
    out: set = set()
    for tag, i1, i2, _j1, _j2 in ops:
        if tag in ("replace", "delete"):
            out.update(("w", i) for i in range(i1, i2))
        elif tag == "insert":
            out.add(("gap", i1))
    return frozenset(out)


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b|; 1.0 when both are empty."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")


def export_records(store: AnnotationStore, *, skip_flagged: bool = False, minimal_only: bool = False
                   ) -> tuple[list[dict], dict]:
    """Minimal-edit records of every exportable annotation, and counts ``{exported, flagged_left_out,
    too_large_left_out, not_edits}`` (``not_edits``: skips, flags without an edit, rejections)."""
    records: list[dict] = []
    counts = {"exported": 0, "flagged_left_out": 0, "too_large_left_out": 0, "not_edits": 0}
    for r in store.annotation_rows():
        if r["status"] != "submitted" or r["edited"] is None:
            counts["not_edits"] += 1
            continue
        if skip_flagged and r["flag"]:
            counts["flagged_left_out"] += 1
            continue
        if minimal_only and r["minimality"] != "ok":
            counts["too_large_left_out"] += 1
            continue
        meta = {"annotator": r["annotator"], "seconds": round(r["seconds"], 1), "mode": r["mode"],
                "flags": [r["flag"]] if r["flag"] else [], "item": r["key"],
                "edit_ratio": None if r["edit_ratio"] is None else round(r["edit_ratio"], 4),
                "minimality": r["minimality"], "submissions": r["submissions"], "submitted_at": _iso(r["updated_at"])}
        if r["mode"] == "edit":
            meta.update(worse=r["worse"], flipped=r["worse"] == "chosen")
        else:
            meta.update(decision=r["decision"], llm_edit=r["llm_edit"])
        source_meta = json.loads(r["item_meta"])
        if source_meta:
            meta["source_meta"] = source_meta
        records.append({"id": f"{r['key']}@{r['annotator']}", "prompt": json.loads(r["prompt"]),
                        "original": r["original"], "edited": r["edited"], "meta": meta})
        counts["exported"] += 1
    return records, counts


def _rate(hits: Sequence[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def _agreement(rows: list[dict]) -> dict:
    """Pairwise agreement over items with two or more counted annotations (see the module docstring)."""
    worse, decision, overlaps = [], [], []
    items = 0
    for group in rows_by_item(r for r in rows if r["status"] == "submitted").values():
        if len(group) < 2:
            continue
        items += 1
        for a, b in combinations(group, 2):
            if a["mode"] == "edit":
                worse.append(a["worse"] == b["worse"])
            else:
                decision.append(a["decision"] == b["decision"])
            if a["edited"] is not None and b["edited"] is not None and a["original"] == b["original"]:
                overlaps.append(jaccard(edit_unit_set(a["original"], a["edited"]),
                                        edit_unit_set(b["original"], b["edited"])))
    return {"items": items, "pairs": len(worse) + len(decision), "worse_agreement": _rate(worse),
            "decision_agreement": _rate(decision), "edit_pairs": len(overlaps),
            "edit_jaccard": round(statistics.fmean(overlaps), 4) if overlaps else None}


def compute_stats(store: AnnotationStore) -> dict:
    """Counts, per-annotator throughput and agreement, as a JSON-ready dict.

    ``annotators[].items_per_hour`` is submitted items over the hours the pages measured on all of
    that person's items (skips included); ``median_seconds`` is over their submitted items.
    """
    rows = store.annotation_rows()
    items = store.items()
    by_item = rows_by_item(rows)
    counted = {i: sum(r["status"] != "skipped" for r in g) for i, g in by_item.items()}
    status = {s: sum(r["status"] == s for r in rows) for s in ("submitted", "skipped", "flagged")}
    subs = [r for r in rows if r["status"] == "submitted"]
    summary = {
        "items": {"total": len(items), "edit": sum(i.mode == "edit" for i in items),
                  "review": sum(i.mode == "review" for i in items),
                  "with_submission": len({r["item_id"] for r in subs}),
                  "complete": sum(counted.get(i.id, 0) >= i.target for i in items),
                  "overlap_items": sum(i.target > 1 for i in items)},
        "annotations": {**status, **{d: sum(r["decision"] == d for r in subs) for d in ("accept", "correct", "reject")},
                        "minimal": sum(r["minimality"] == "ok" for r in subs),
                        "too_large": sum(r["minimality"] == "too_large" for r in subs),
                        "with_flag": sum(bool(r["flag"]) for r in rows)},
    }
    people = []
    for who in store.annotators():
        mine = [r for r in rows if r["annotator_id"] == who.id]
        done = [r for r in mine if r["status"] == "submitted"]
        secs = sum(r["seconds"] for r in mine)
        people.append({"name": who.name, "submitted": len(done),
                       "skipped": sum(r["status"] == "skipped" for r in mine),
                       "flagged": sum(r["status"] == "flagged" for r in mine), "seconds": round(secs, 1),
                       "median_seconds": round(statistics.median(r["seconds"] for r in done), 1) if done else None,
                       "items_per_hour": round(len(done) / (secs / 3600), 1) if secs > 0 and done else None})
    summary["annotators"] = people
    summary["agreement"] = _agreement(rows)
    summary["history"] = _history(store, rows)
    return summary


def _history(store: AnnotationStore, rows: list[dict]) -> dict:
    """``submissions`` (every stored answer), ``resubmitted`` (person-item pairs answered more than once),
    ``withdrawn`` (pairs whose submitted edit a confirmed skip replaced)."""
    hist = store.submissions()
    per: dict[tuple, list[str]] = {}
    for h in hist:
        per.setdefault((h["item_id"], h["annotator_id"]), []).append(h["status"])
    current = {(r["item_id"], r["annotator_id"]): r["status"] for r in rows}
    return {"submissions": len(hist), "resubmitted": sum(len(v) > 1 for v in per.values()),
            "withdrawn": sum("submitted" in v and current.get(k) != "submitted" for k, v in per.items())}
