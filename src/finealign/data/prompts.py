"""Reading the prompts of any prompt-bearing file (prompts, pairs, responses, ...) with stable ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .io import iter_objects
from .records import FieldError, Prompt, check_prompt


@dataclass(frozen=True)
class PromptItem:
    """One prompt and its stable id."""

    id: str
    prompt: Prompt


def read_prompts(path: str | Path) -> list[PromptItem]:
    """Prompts of any prompt-bearing file (prompts, pairs, responses, ...), with stable ids.

    A prompt's id is the record's ``prompt_id`` (response files) or ``id``, else its 1-based line
    number. Records repeating an id with the same prompt (several responses to one prompt) are
    read once; the same id with a different prompt is an error. Raises ``DataError`` naming
    ``path:line: field``, and ``DataError`` when the file holds no prompt.
    """
    items: list[PromptItem] = []
    seen: dict[str, tuple[int, Prompt]] = {}
    for line, obj in iter_objects(path):
        try:
            prompt = check_prompt(obj.get("prompt"))
            pid = None
            for key in ("prompt_id", "id"):
                v = obj.get(key)
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
                    raise FieldError(key, f"expected a non-empty string or integer, got {v!r}")
                pid = str(v)
                break
        except FieldError as e:
            raise DataError(path, line, e.field, e.problem) from None
        pid = str(line) if pid is None else pid
        if pid in seen:
            first_line, first_prompt = seen[pid]
            if first_prompt != prompt:
                raise DataError(path, line, "id", f"duplicate id {pid!r} (first at line {first_line}) with a different prompt")
            continue
        seen[pid] = (line, prompt)
        items.append(PromptItem(pid, prompt))
    if not items:
        raise DataError(path, None, None, "no prompts in file")
    return items
