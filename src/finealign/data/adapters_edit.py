"""Adapters that give minimal-edit pairs: QA-Feedback, DeFacto, ExpertQA."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from .adapters_common import Loaded, need_file, qa_prompt, rows
from .records import EditRecord

DEFACTO_INSTRUCTION = "Summarize the following article in one sentence."


def load_qa_edits(path: Path) -> Loaded:
    """``prediction 1`` -> ``feedback.corrected-prediction``; all 500 kept, ``meta["changed"]`` marks the 494 edits.

    13 corrections are empty (the annotator deleted every sentence as irrelevant or unverifiable):
    they are kept, as an edit that marks the whole original bad. ``meta["errors"]`` keeps the
    annotated error spans (character offsets into ``prediction 1``).
    """
    path = need_file(path, "dev_feedback.json")
    out, skipped = [], Counter()
    for row in rows(path):
        prompt = qa_prompt(row.text("question"), row.items("passages"), row)
        original = row.text("prediction 1")
        edited = row.text("feedback.corrected-prediction", allow_empty=True)  # 13 are empty: all deleted
        errors = row.get("feedback.errors") or []
        if not isinstance(errors, list):
            raise row.error("feedback.errors", f"expected a list, got {type(errors).__name__}")
        out.append(EditRecord(prompt=prompt, original=original, edited=edited, id=str(row.line),
                              meta={"changed": original != edited, "errors": errors, "question_index": row.line - 1}))
    return Loaded(out, skipped)


def load_defacto(path: Path, split: str) -> Loaded:
    """``candidate`` -> ``feedback.summary`` for the summaries marked ``has_error``; the article is in the prompt."""
    path = need_file(path, f"{split}.jsonl")
    out, skipped = [], Counter()
    for row in rows(path):
        if not row.flag("has_error"):
            skipped["has_error is false"] += 1
            continue
        article, candidate = row.text("article"), row.text("candidate")
        edited = row.text("feedback.summary", allow_empty=True)
        if not edited.strip():
            skipped["empty correction"] += 1
            continue
        meta = {"changed": candidate != edited, "doc_id": row.get("doc_id"), "split": split}
        for k in ("intrinsic_error", "extrinsic_error"):
            if row.get(k) is not None:
                meta[k] = row.flag(k)
        for k in ("instruction", "explanation", "evidence"):
            v = row.get(f"feedback.{k}")
            if isinstance(v, str) and v.strip():
                meta[k] = v
        doc = row.get("doc_id")
        out.append(EditRecord(prompt=f"{DEFACTO_INSTRUCTION}\n\n{article.strip()}", original=candidate, edited=edited,
                              id=str(doc) if doc is not None else str(row.line), meta=meta))
    return Loaded(out, skipped)


def load_expertqa(path: Path) -> Loaded:
    """``answer_string`` -> ``revised_answer_string`` where the expert changed it."""
    path = need_file(path, "expertqa_lfqa_val_test_union.jsonl")
    out, skipped = [], Counter()
    for row in rows(path):
        question, original = row.text("question"), row.text("answer_string")
        edited = row.text("revised_answer_string", allow_empty=True)
        if not edited.strip():
            skipped["empty revised answer"] += 1
            continue
        if edited == original:
            skipped["unchanged"] += 1
            continue
        meta = {"system": row.get("system")}
        md = row.get("metadata")
        if isinstance(md, dict):
            meta.update({k: v for k, v in md.items() if isinstance(v, str)})
        out.append(EditRecord(prompt=question, original=original, edited=edited, id=str(row.line), meta=meta))
    return Loaded(out, skipped)
