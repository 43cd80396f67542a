"""``finealign edit``: minimal edits of rejected responses by a local model or an OpenAI-compatible endpoint.

Flags are generated from :class:`EditConfig` (``--config`` reads the same fields from YAML).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DeviceArgs, non_negative, positive, setting
from ..data.io import to_json
from ..edits.minimality import ON_VIOLATION


@dataclass(kw_only=True)
class EditConfig(DeviceArgs):
    """Ask an editor for the smallest change that makes each rejected response good; write prompt/original/edited.

    Failures (errors, timeouts, empty replies) go to OUT.failed.jsonl and are retried on the next run;
    the minimality guard flags or drops edits that change nothing or more than --max-ratio of the words.
    The JSON summary goes to stdout. ``dtype``/``device`` apply to a local editor.
    """

    input: str = setting(None, reads="file", positional=True, required=True, metavar="IN",
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
    max_ratio: float = setting(0.5, check=positive, help="Minimality guard: largest allowed edit ratio.")
    on_violation: str = setting("flag", choices=ON_VIOLATION,
                                help="flag (keep, marked in meta) | drop (to OUT.dropped.jsonl).")
    limit: int | None = setting(None, check=positive, help="Edit only the first N input records.")
    template: str = setting("v1", help="Editing prompt version.")
    temperature: float = setting(0.0, check=non_negative, help="0 = greedy.")
    max_new_tokens: int = setting(1024, check=positive, help="Longest edit, in tokens.")
    batch_size: int = setting(4, identity=False, check=positive, help="Sequences decoded together (local editor).")
    overwrite: bool = setting(False, identity=False,
                              help="Start afresh (OUT and its side files) instead of resuming (another "
                                   "editor, template or guard setting is refused without it).")


def run_edit(cfg: EditConfig, quiet: bool = False) -> None:
    """Validate the input, load the editor, edit (resumably); summary line on stderr, JSON on stdout."""
    from ..edits.editors import make_editor
    from ..edits.minimality import MinimalityConfig
    from ..edits.run import EditJobConfig, read_edit_inputs, run_edits, summary_line
    from ..edits.template import get_template
    from .common import console, out as stdout, progress_callback

    job = EditJobConfig(MinimalityConfig(cfg.max_ratio, cfg.on_violation), cfg.limit, cfg.overwrite)
    read_edit_inputs(cfg.input)  # validate the whole input before loading any model
    tpl = get_template(cfg.template)
    if cfg.editor.startswith("local:"):
        console.print(f"loading {cfg.editor[6:]} ({cfg.dtype}) ...")
    ed = make_editor(cfg.editor, template=tpl, base_url=cfg.base_url, concurrency=cfg.concurrency,
                     retries=cfg.retries, timeout=cfg.timeout, backoff=cfg.backoff, temperature=cfg.temperature,
                     max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, dtype=cfg.dtype, device=cfg.device)
    try:
        with progress_callback("edit", disable=quiet) as on_progress:
            stats = run_edits(ed, cfg.input, cfg.out, job, on_progress=on_progress)
    finally:
        ed.close()
    console.print(summary_line(stats), soft_wrap=True, highlight=False)
    stdout.print(to_json(stats.to_dict(), indent=2), soft_wrap=True, highlight=False, markup=False)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "edit", EditConfig, run_edit,
                        help=" ".join(EditConfig.__doc__.split("``dtype``")[0].split()), resumable=True)
