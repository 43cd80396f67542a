"""Record types, in TRL's standard formats where TRL has one.

A prompt is a non-empty string or a non-empty list of chat messages ``{"role", "content"}``.
Each record type validates itself from a JSON object with ``from_obj`` and raises
``ValueError(field, problem)``-style errors that readers turn into ``path:line: field: problem``.

========================  =====================================================
type                      fields on disk
========================  =====================================================
``PromptRecord``          ``prompt`` (+ ``id``, ``meta``)
``ResponseRecord``        ``prompt``, ``completion`` (+ ``id``, ``prompt_id``, ``sample``, ``meta``)
``PairRecord``            ``prompt``, ``chosen``, ``rejected`` (+ ``id``, ``subset``, ``p_chosen``, ``meta``)
``KTORecord``             ``prompt``, ``completion``, ``label`` (bool) (+ ``id``, ``meta``)
``EditRecord``            ``prompt``, ``original``, ``edited`` (+ ``id``, ``meta``)
``RatingRecord``          ``prompt``, ``response``, ``score`` (+ ``id``, ``subset``, ``meta``)
========================  =====================================================

``p_chosen`` is the probability that ``chosen`` is the better response (1.0 for a hard label;
AlpacaEval's soft judgments give values in [0.5, 1]).

A prompt must not be empty (a blank string, an empty message list, or a user/system message with no
text). A *response* may be empty (``completion``, ``chosen``, ``rejected``, ``response``,
``original``, ``edited``): a model that said nothing is real data. Consumers count empty responses,
score them as they are, and skip them only where a loss cannot use them. Messages may come in every
shape TRL passes (``data.chat``). In CSV input an empty cell of an optional field means "absent".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

# message shapes live in ``data.chat`` (one module for messages and their rendering); re-exported here
from .chat import (ROLES, FieldError, Message, Prompt, as_messages, completion_text, message_text,  # noqa: F401
                   normalize_prompt)


def check_prompt(value: Any, name: str = "prompt") -> Prompt:
    """A prompt: a non-empty string, or a non-empty list of messages in any shape ``data.chat`` reads
    (string content, typed text blocks, tool calls, tool turns), normalised. Raises ``FieldError``."""
    return normalize_prompt(value, name)


def check_text(value: Any, name: str, *, allow_empty: bool = False) -> str:
    """A response: a string, text blocks, or messages (TRL's conversational completion, read as the
    text of its assistant turns, see ``data.chat.completion_text``). Raises ``FieldError``."""
    value = completion_text(value, name)
    if not allow_empty and not value.strip():
        raise FieldError(name, "empty")
    return value


def check_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise FieldError(name, f"expected a number, got {value!r}") from None
        else:
            raise FieldError(name, f"expected a number, got {type(value).__name__}" if value is not None else "missing")
    if not math.isfinite(value):
        raise FieldError(name, f"expected a finite number, got {value}")
    return float(value)


def check_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise FieldError(name, f"expected true or false, got {value!r}" if value is not None else "missing")


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or value == "":  # an empty CSV cell is an absent optional field
        return None
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {type(value).__name__}")
    return value


def _meta(value: Any) -> dict:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise FieldError("meta", f"expected an object, got {type(value).__name__}")
    return value


@dataclass
class Record:
    """Base: ``to_obj`` drops empty optional fields."""

    kind: ClassVar[str] = "record"

    def to_obj(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None or (f.name == "meta" and not v):
                continue
            out[f.name] = v
        return out


@dataclass
class PromptRecord(Record):
    kind: ClassVar[str] = "prompt"
    prompt: Prompt
    id: str | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_obj(cls, o: dict) -> "PromptRecord":
        return cls(prompt=check_prompt(o.get("prompt")), id=_opt_str(o.get("id"), "id"), meta=_meta(o.get("meta")))


@dataclass
class ResponseRecord(Record):
    kind: ClassVar[str] = "response"
    prompt: Prompt
    completion: str
    id: str | None = None
    prompt_id: str | None = None
    sample: int | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_obj(cls, o: dict) -> "ResponseRecord":
        comp = o.get("completion", o.get("response"))
        sample = o.get("sample")
        if sample == "":
            sample = None
        elif isinstance(sample, str) and sample.strip().lstrip("-").isdigit():  # CSV cells are strings
            sample = int(sample)
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)):
            raise FieldError("sample", f"expected an integer, got {sample!r}")
        return cls(prompt=check_prompt(o.get("prompt")), completion=check_text(comp, "completion", allow_empty=True),
                   id=_opt_str(o.get("id"), "id"), prompt_id=_opt_str(o.get("prompt_id"), "prompt_id"),
                   sample=sample, meta=_meta(o.get("meta")))


@dataclass
class PairRecord(Record):
    kind: ClassVar[str] = "pair"
    prompt: Prompt
    chosen: str
    rejected: str
    id: str | None = None
    subset: str | None = None
    p_chosen: float | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_obj(cls, o: dict) -> "PairRecord":
        p = o.get("p_chosen")
        if p is not None and p != "":
            p = check_float(p, "p_chosen")
            if not 0.0 <= p <= 1.0:
                raise FieldError("p_chosen", f"expected a probability in [0, 1], got {p}")
        return cls(prompt=check_prompt(o.get("prompt")), chosen=check_text(o.get("chosen"), "chosen", allow_empty=True),
                   rejected=check_text(o.get("rejected"), "rejected", allow_empty=True), id=_opt_str(o.get("id"), "id"),
                   subset=_opt_str(o.get("subset"), "subset"), p_chosen=p if p != "" else None,
                   meta=_meta(o.get("meta")))


@dataclass
class KTORecord(Record):
    kind: ClassVar[str] = "kto"
    prompt: Prompt
    completion: str
    label: bool
    id: str | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_obj(cls, o: dict) -> "KTORecord":
        return cls(prompt=check_prompt(o.get("prompt")), completion=check_text(o.get("completion"), "completion", allow_empty=True),
                   label=check_bool(o.get("label"), "label"), id=_opt_str(o.get("id"), "id"), meta=_meta(o.get("meta")))


@dataclass
class EditRecord(Record):
    kind: ClassVar[str] = "edit"
    prompt: Prompt
    original: str
    edited: str
    id: str | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_obj(cls, o: dict) -> "EditRecord":
        # an empty ``edited`` is a minimal edit too (QA-Feedback has 13 deletions of a whole response);
        # an empty ``original`` is read and counted by the consumers (the edit job, the token RM).
        return cls(prompt=check_prompt(o.get("prompt")), original=check_text(o.get("original"), "original", allow_empty=True),
                   edited=check_text(o.get("edited"), "edited", allow_empty=True), id=_opt_str(o.get("id"), "id"), meta=_meta(o.get("meta")))


@dataclass
class RatingRecord(Record):
    kind: ClassVar[str] = "rating"
    prompt: Prompt
    response: str
    score: float
    id: str | None = None
    subset: str | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_obj(cls, o: dict) -> "RatingRecord":
        return cls(prompt=check_prompt(o.get("prompt")), response=check_text(o.get("response"), "response", allow_empty=True),
                   score=check_float(o.get("score"), "score"), id=_opt_str(o.get("id"), "id"),
                   subset=_opt_str(o.get("subset"), "subset"), meta=_meta(o.get("meta")))


RECORD_TYPES: dict[str, type[Record]] = {
    t.kind: t for t in (PromptRecord, ResponseRecord, PairRecord, KTORecord, EditRecord, RatingRecord)
}


def detect_kind(obj: dict) -> str:
    """Guess the record type of a JSON object from its keys."""
    keys = set(obj)
    if {"chosen", "rejected"} <= keys:
        return "pair"
    if {"original", "edited"} <= keys:
        return "edit"
    if {"response", "score"} <= keys:
        return "rating"
    if {"completion", "label"} <= keys:
        return "kto"
    if "completion" in keys or "response" in keys:  # ``response`` without ``score``: a response to score
        return "response"
    if "prompt" in keys:
        return "prompt"
    raise FieldError("prompt", f"cannot tell the record type from the fields {sorted(keys)}")


def prompt_text(prompt: Prompt) -> str:
    """A prompt flattened to text (for stats and display)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {message_text(m)}" for m in prompt)
