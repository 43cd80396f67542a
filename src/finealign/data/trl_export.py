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

Formats: ``conversational`` writes prompts as lists of chat messages and completions as
``[{"role": "assistant", "content": ...}]``; ``standard`` writes plain strings. A multi-turn prompt
has no plain-string form of its own: in ``standard`` format it is rendered with ``tokenizer``'s
chat template (generation prompt added), and without a tokenizer it is an error. ``auto`` picks
conversational when any prompt is a message list.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, NamedTuple, Sequence

from ..errors import FinealignError
from .records import EditRecord, KTORecord, PairRecord, Prompt, RatingRecord, Record, ResponseRecord, as_messages

TARGETS = ("dpo", "kto", "sft", "prompt")
FORMATS = ("auto", "standard", "conversational")
DEFAULT_TARGET = {"pair": "dpo", "edit": "dpo", "kto": "kto", "response": "sft", "rating": "kto", "prompt": "prompt"}


class Exported(NamedTuple):
    rows: list[dict]
    target: str
    format: str
    skipped: Counter


def _prompt(p: Prompt, fmt: str, tokenizer, where: str) -> Any:
    if fmt == "conversational":
        return as_messages(p)
    if isinstance(p, str):
        return p
    if len(p) == 1 and p[0]["role"] == "user":
        return p[0]["content"]
    if tokenizer is None:
        raise FinealignError(f"{where}: prompt has {len(p)} messages; standard format needs a tokenizer to render "
                             "it with the chat template (--tokenizer), or use --format conversational")
    return tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)


def _completion(text: str, fmt: str) -> Any:
    return [{"role": "assistant", "content": text}] if fmt == "conversational" else text


def _triples(r: Record, target: str, threshold: float | None, skipped: Counter) -> list[tuple]:
    """The content of the rows one record gives, before formatting.

    Returns tuples: ``("dpo", chosen, rejected)``, ``("kto", completion, label)``, ``("sft", completion)``.
    """
    kind = r.kind
    if target == "dpo":
        if isinstance(r, PairRecord):
            return [("dpo", r.chosen, r.rejected)]
        if isinstance(r, EditRecord):
            if r.original == r.edited:
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
            if r.original == r.edited:
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
