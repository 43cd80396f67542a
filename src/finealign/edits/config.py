"""``finealign edit``'s settings (the verb table's ``edit`` row): light, so the command line builds its flags
without loading the edit job or a model; ``edits.run.edit_identity`` derives the output's manifest from its
identity fields."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DeviceArgs, non_negative, positive, setting
from .minimality import ON_VIOLATION

__all__ = ["EditConfig"]


@dataclass(kw_only=True)
class EditConfig(DeviceArgs):
    """Ask an editor for the smallest change that makes each rejected response good; write prompt/original/edited.

    Failures (errors, timeouts, empty replies) go to OUT.failed.jsonl and are retried on the next run;
    the minimality guard flags or drops edits that change nothing or more than --max-ratio of the words.
    The JSON summary goes to stdout. ``dtype``/``device`` apply to a local editor.
    """

    input: str = setting(None, reads="file", keyed=True, positional=True, required=True, metavar="IN",
                         help="Pairs (the rejected response is edited), responses, or edits.")
    out: str = setting(None, identity=False, positional=True, required=True, metavar="OUT",
                       help="Output JSONL of edit records; a rerun resumes it.")
    editor: str = setting("local:smollm2-135m-instruct", reads="editor", short="-e",
                          help="local:MODEL_SPEC (in-process) or openai:MODEL (an OpenAI-compatible endpoint).")
    base_url: str | None = setting(None, help="Endpoint of openai:MODEL, e.g. http://127.0.0.1:8000/v1 (default: "
                                              "$OPENAI_BASE_URL, else OpenAI). Key: $FINEALIGN_EDITOR_API_KEY or "
                                              "$OPENAI_API_KEY.")
    concurrency: int = setting(4, identity=False, check=positive, help="Requests in flight at once (openai editor).")
    retries: int = setting(4, identity=False, check=non_negative,
                           help="Retries per request on 429, 5xx, timeouts (exponential "
                                "backoff).")
    timeout: float = setting(60.0, identity=False, check=positive, help="Seconds per request (openai editor).")
    backoff: float = setting(1.0, identity=False, check=non_negative,
                             help="First backoff in seconds; doubles per retry, at most 30.")
    max_ratio: float = setting(0.5, check=positive, help="Minimality guard: largest allowed edit ratio (words "
                                                         "replaced, deleted or inserted over the original's; may "
                                                         "exceed 1).")
    on_violation: str = setting("flag", choices=ON_VIOLATION,
                                help="flag (keep, marked in meta) | drop (to OUT.dropped.jsonl).")
    limit: int | None = setting(None, keyed=True, check=positive, help="Edit only the first N input records.")
    template: str = setting("v1", help="Editing prompt version.")
    temperature: float = setting(0.0, check=non_negative, help="0 = greedy.")
    max_new_tokens: int = setting(1024, check=positive, help="Longest edit, in tokens.")
    batch_size: int = setting(4, identity=False, check=positive, help="Sequences decoded together (local editor).")
    overwrite: bool = setting(False, identity=False,
                              help="Start afresh (OUT and its side files) instead of resuming (another "
                                   "editor, template or guard setting is refused without it).")
