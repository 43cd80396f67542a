"""Export finealign records to the dataset formats TRL's trainers read.

Targets (TRL's names for the columns):

- ``dpo``: ``prompt``, ``chosen``, ``rejected`` (preference). From pairs; from edits the edited
  response is chosen over the original (unchanged and empty edits are left out).
- ``kto``: ``prompt``, ``completion``, ``label`` (unpaired preference). From KTO records; a pair
  gives two rows (chosen true, rejected false); an edit gives edited true and original false;
  ratings need ``threshold`` (``label = score >= threshold``).
- ``sft``: ``prompt``, ``completion`` (prompt-completion). From responses; the chosen side of a
  pair; the edited side of an edit; KTO rows labelled true; ratings with ``score >= threshold``.
- ``prompt``: ``prompt`` only (for online methods such as GRPO / online DPO), duplicates removed.

Formats (one per file): ``conversational`` writes prompts as lists of chat messages and completions
as ``[{"role": "assistant", "content": ...}]``; ``standard`` writes plain strings. In ``standard``
format with a ``tokenizer``, *every* prompt is rendered with its chat template (assistant turn
opened; ``data.chat.render_prompt``), single-turn ones too; without a tokenizer every prompt is its
plain text, and a prompt with more than one message (no plain form of its own) is an error. A
prompt that already carries a chat template is kept as it is in ``standard`` format and is an
error in ``conversational`` format. ``auto`` picks conversational when any prompt is a message
list. Pairs whose chosen and rejected texts are the same (``core.align.same_text``) are left out
and counted (a tie teaches no preference).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple, Sequence

from ..core.align import same_text
from ..errors import FinealignError
from .chat import trl_completion, trl_prompt
from .records import EditRecord, KTORecord, PairRecord, Prompt, RatingRecord, Record, ResponseRecord

TARGETS = ("dpo", "kto", "sft", "prompt")
FORMATS = ("auto", "standard", "conversational")
DEFAULT_TARGET = {"pair": "dpo", "edit": "dpo", "kto": "kto", "response": "sft", "rating": "kto", "prompt": "prompt"}


class Exported(NamedTuple):
    rows: list[dict]
    target: str
    format: str
    skipped: Counter


def _prompt(p: Prompt, fmt: str, tokenizer, where: str) -> Any:
    return trl_prompt(p, conversational=fmt == "conversational", tokenizer=tokenizer, where=where)


def _completion(text: str, fmt: str) -> Any:
    return trl_completion(text, conversational=fmt == "conversational")


def _triples(r: Record, target: str, threshold: float | None, skipped: Counter) -> list[tuple]:
    """The content of the rows one record gives, before formatting.

    Returns tuples: ``("dpo", chosen, rejected)``, ``("kto", completion, label)``, ``("sft", completion)``.
    """
    kind = r.kind
    if isinstance(r, PairRecord) and target in ("dpo", "kto") and same_text(r.chosen, r.rejected):
        skipped["identical chosen and rejected"] += 1  # a tie: no preference to learn
        return []
    if target == "dpo":
        if isinstance(r, PairRecord):
            return [("dpo", r.chosen, r.rejected)]
        if isinstance(r, EditRecord):
            if same_text(r.original, r.edited):
                skipped["unchanged edit"] += 1
                return []
            if not r.edited.strip():
                skipped["empty edited response"] += 1
                return []
            return [("dpo", r.edited, r.original)]
    elif target == "kto":
        if isinstance(r, KTORecord):
            return [("kto", r.completion, bool(r.label))]
        if isinstance(r, PairRecord):
            return [("kto", r.chosen, True), ("kto", r.rejected, False)]
        if isinstance(r, EditRecord):
            if same_text(r.original, r.edited):
                skipped["unchanged edit"] += 1
                return []
            rows = [("kto", r.original, False)]
            if r.edited.strip():
                rows.insert(0, ("kto", r.edited, True))
            return rows
        if isinstance(r, RatingRecord):
            return [("kto", r.response, r.score >= threshold)]
    elif target == "sft":
        if isinstance(r, ResponseRecord):
            if not r.completion.strip():
                skipped["empty completion"] += 1
                return []
            return [("sft", r.completion)]
        if isinstance(r, PairRecord):
            return [("sft", r.chosen)]
        if isinstance(r, EditRecord):
            if not r.edited.strip():
                skipped["empty edited response"] += 1
                return []
            return [("sft", r.edited)]
        if isinstance(r, KTORecord):
            if not r.label:
                skipped["label false"] += 1
                return []
            return [("sft", r.completion)]
        if isinstance(r, RatingRecord):
            if r.score < threshold:
                skipped["score below threshold"] += 1
                return []
            return [("sft", r.response)]
    raise FinealignError(f"cannot export {kind} records as {target}; "
                         f"{kind} records export as: {', '.join(_targets_for(kind))}")


def _targets_for(kind: str) -> list[str]:
    return {"pair": ["dpo", "kto", "sft", "prompt"], "edit": ["dpo", "kto", "sft", "prompt"],
            "kto": ["kto", "sft", "prompt"], "response": ["sft", "prompt"], "rating": ["kto", "sft", "prompt"],
            "prompt": ["prompt"]}.get(kind, ["prompt"])


def to_trl(records: Sequence[Record], target: str | None = None, fmt: str = "auto", *, tokenizer=None,
           threshold: float | None = None, source: str = "records") -> Exported:
    """Rows in TRL's format for ``target`` (default: by record kind, see ``DEFAULT_TARGET``).

    ``source`` names the input in error messages (``source:N`` is the N-th record).
    """
    if not records:
        raise FinealignError(f"{source}: no records to export")
    kind = records[0].kind
    target = target or DEFAULT_TARGET[kind]
    if target not in TARGETS:
        raise FinealignError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if fmt not in FORMATS:
        raise FinealignError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if kind == "rating" and target in ("kto", "sft") and threshold is None:
        raise FinealignError(f"rating records export as {target} only with a score threshold (--threshold)")
    if target not in _targets_for(kind):
        raise FinealignError(f"cannot export {kind} records as {target}; "
                             f"{kind} records export as: {', '.join(_targets_for(kind))}")
    if fmt == "auto":
        fmt = "conversational" if any(isinstance(r.prompt, list) for r in records) else "standard"
    rows: list[dict] = []
    skipped: Counter = Counter()
    seen: set[str] = set()
    for i, r in enumerate(records, start=1):
        prompt = _prompt(r.prompt, fmt, tokenizer, f"{source}:{i}")
        if target == "prompt":
            key = repr(prompt)
            if key in seen:
                skipped["duplicate prompt"] += 1
                continue
            seen.add(key)
            rows.append({"prompt": prompt})
            continue
        for t in _triples(r, target, threshold, skipped):
            if t[0] == "dpo":
                rows.append({"prompt": prompt, "chosen": _completion(t[1], fmt), "rejected": _completion(t[2], fmt)})
            elif t[0] == "kto":
                rows.append({"prompt": prompt, "completion": _completion(t[1], fmt), "label": t[2]})
            else:
                rows.append({"prompt": prompt, "completion": _completion(t[1], fmt)})
    return Exported(rows, target, fmt, skipped)
