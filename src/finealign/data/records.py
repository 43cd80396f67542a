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

Empty text is an error (a blank prompt, message content, chosen, rejected, original, response or KTO
completion), except ``EditRecord.edited`` (deleting a whole response is an edit) and a generated
``ResponseRecord.completion``. In CSV input an empty cell of an optional field means "absent".
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

Message = dict[str, str]
Prompt = Union[str, list[Message]]

ROLES = ("system", "user", "assistant")


class FieldError(ValueError):
    """A problem with one field of one record."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def check_prompt(value: Any, name: str = "prompt") -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise FieldError(name, "empty")
        return value
    if isinstance(value, list):
        if not value:
            raise FieldError(name, "empty message list")
        for i, m in enumerate(value):
            if not isinstance(m, dict):
                raise FieldError(f"{name}[{i}]", f"expected a message object, got {type(m).__name__}")
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                raise FieldError(f"{name}[{i}].role", f"expected one of {', '.join(ROLES)}, got {role!r}")
            if not isinstance(content, str):
                raise FieldError(f"{name}[{i}].content", f"expected a string, got {type(content).__name__}")
            if not content.strip():
                raise FieldError(f"{name}[{i}].content", "empty")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    if value is None:
        raise FieldError(name, "missing")
    raise FieldError(name, f"expected a string or a list of messages, got {type(value).__name__}")


def check_text(value: Any, name: str, *, allow_empty: bool = False) -> str:
    if value is None:
        raise FieldError(name, "missing")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and "content" in value[0]:
        value = value[0]["content"]  # TRL conversational completion: [{"role": "assistant", ...}]
    if not isinstance(value, str):
        raise FieldError(name, f"expected a string, got {type(value).__name__}")
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
        return cls(prompt=check_prompt(o.get("prompt")), chosen=check_text(o.get("chosen"), "chosen"),
                   rejected=check_text(o.get("rejected"), "rejected"), id=_opt_str(o.get("id"), "id"),
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
        return cls(prompt=check_prompt(o.get("prompt")), completion=check_text(o.get("completion"), "completion"),
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
        # an empty ``edited`` is allowed: deleting the whole response is a minimal edit too (QA-Feedback
        # has 13 such corrections); ``original`` must not be empty.
        return cls(prompt=check_prompt(o.get("prompt")), original=check_text(o.get("original"), "original"),
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
        return cls(prompt=check_prompt(o.get("prompt")), response=check_text(o.get("response"), "response"),
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
    if "completion" in keys:
        return "response"
    if "prompt" in keys:
        return "prompt"
    raise FieldError("prompt", f"cannot tell the record type from the fields {sorted(keys)}")


def as_messages(prompt: Prompt) -> list[Message]:
    """A prompt as a list of chat messages (a string becomes one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def prompt_text(prompt: Prompt) -> str:
    """A prompt flattened to text (for stats and display)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)
