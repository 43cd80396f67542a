"""Statistics of a data file: record kind, counts and token-length percentiles of every text field.

Percentiles are nearest-rank: ``p`` of ``n`` sorted values is the ``ceil(p/100 * n)``-th smallest, so
every figure is a length that occurs in the data. Prompts are measured as the model sees them: the
tokenizer's chat template with the generation prompt, when the tokenizer has one; other text fields
are counted without special tokens.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..core.align import same_text
from .chat import render_prompt
from .records import (
    EditRecord,
    KTORecord,
    PairRecord,
    PromptRecord,
    RatingRecord,
    Record,
    ResponseRecord,
    prompt_text,
)

# text fields measured per record kind (the prompt is always first)
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "prompt": ("prompt",),
    "response": ("prompt", "completion"),
    "pair": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion"),
    "edit": ("prompt", "original", "edited"),
    "rating": ("prompt", "response"),
}


@dataclass(frozen=True)
class Summary:
    """Distribution of one quantity over the records: count, mean and nearest-rank percentiles."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True)
class DataStats:
    """What ``finealign data stats`` reports.

    ``lengths`` maps a text field to the summary of its length in tokens of ``tokenizer``;
    ``values`` summarises numeric fields (``score``, ``p_chosen``); ``counts`` holds named counts
    (``records``, ``unique_prompts``, ``multi_turn_prompts``, ``changed``, ``identical_pairs``,
    ``empty_chosen`` / ``empty_rejected`` / ``empty_completions`` / ``empty_responses``, ``label=true``,
    ``subset=NAME``, ...).
    """

    path: str
    kind: str
    tokenizer: str
    counts: dict[str, int]
    lengths: dict[str, Summary]
    values: dict[str, Summary]

    def to_obj(self) -> dict:
        return asdict(self)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``p`` in (0, 100])."""
    if not sorted_values:
        raise ValueError("no values")
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(k, len(sorted_values)) - 1]


def summarize(values: Sequence[float]) -> Summary:
    v = sorted(values)
    return Summary(n=len(v), mean=sum(v) / len(v), p50=percentile(v, 50), p90=percentile(v, 90),
                   p99=percentile(v, 99), max=v[-1])


def _prompt_strings(prompts: list, tokenizer) -> list[str]:
    return [render_prompt(tokenizer, p) for p in prompts]  # data.chat: as generation renders them


def token_lengths(texts: list[str], tokenizer, batch: int = 512, on_batch=None) -> list[int]:
    """Number of tokens of each text, without special tokens added; ``on_batch(n)`` after each batch."""
    out: list[int] = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i:i + batch], add_special_tokens=False)["input_ids"]
        out.extend(len(ids) for ids in enc)
        if on_batch is not None:
            on_batch(len(enc))
    return out


def _field_text(r: Record, name: str) -> str:
    return getattr(r, name)


def compute_stats(records: Sequence[Record], tokenizer, *, path: str | Path = "", tokenizer_name: str = "",
                  on_batch=None) -> DataStats:
    """Counts and token-length summaries of ``records`` (all of one kind).

    ``on_batch(n)`` is called after each batch of ``n`` texts is tokenized (for a progress bar; the
    total is ``len(records) * len(TEXT_FIELDS[kind])``).
    """
    if not records:
        return DataStats(str(path), "empty", tokenizer_name, {"records": 0}, {}, {})
    kind = records[0].kind
    counts: Counter = Counter(records=len(records))
    counts["unique_prompts"] = len({prompt_text(r.prompt) for r in records})
    counts["multi_turn_prompts"] = sum(isinstance(r.prompt, list) and len(r.prompt) > 1 for r in records)
    values: dict[str, Summary] = {}
    for r in records:
        subset = getattr(r, "subset", None)
        if subset:
            counts[f"subset={subset}"] += 1
    if kind == "pair":
        ps = [r.p_chosen for r in records if isinstance(r, PairRecord) and r.p_chosen is not None]
        if ps:
            values["p_chosen"] = summarize(ps)
        pairs = [r for r in records if isinstance(r, PairRecord)]
        counts["identical_pairs"] = sum(same_text(r.chosen, r.rejected) for r in pairs)  # ties: skipped by trainers
        counts["empty_chosen"] = sum(not r.chosen.strip() for r in pairs)
        counts["empty_rejected"] = sum(not r.rejected.strip() for r in pairs)
    elif kind == "kto":
        counts["label=true"] = sum(bool(r.label) for r in records if isinstance(r, KTORecord))
        counts["label=false"] = len(records) - counts["label=true"]
        counts["empty_completions"] = sum(not r.completion.strip() for r in records if isinstance(r, KTORecord))
    elif kind == "edit":
        counts["changed"] = sum(not same_text(r.original, r.edited) for r in records if isinstance(r, EditRecord))
        counts["empty_original"] = sum(not r.original.strip() for r in records if isinstance(r, EditRecord))
        counts["empty_edited"] = sum(not r.edited.strip() for r in records if isinstance(r, EditRecord))
    elif kind == "rating":
        values["score"] = summarize([r.score for r in records if isinstance(r, RatingRecord)])
        counts["empty_responses"] = sum(not r.response.strip() for r in records if isinstance(r, RatingRecord))
    elif kind == "response":
        counts["empty_completions"] = sum(not r.completion.strip() for r in records if isinstance(r, ResponseRecord))
        systems = Counter(r.meta.get("system") for r in records if isinstance(r, ResponseRecord))
        if len(systems) > 1 or None not in systems:
            counts.update({f"system={k}": v for k, v in systems.items() if k})
    elif not isinstance(records[0], PromptRecord):
        raise ValueError(f"unknown record kind {kind!r}")
    lengths: dict[str, Summary] = {}
    for name in TEXT_FIELDS[kind]:
        if name == "prompt":
            texts = _prompt_strings([r.prompt for r in records], tokenizer)
        else:
            texts = [_field_text(r, name) for r in records]
        lengths[name] = summarize(token_lengths(texts, tokenizer, on_batch=on_batch))
    return DataStats(str(path), kind, tokenizer_name, dict(counts), lengths, values)
