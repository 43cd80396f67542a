"""``finealign edit``: minimal edits of rejected responses by a local model or an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import DeviceOpt, DtypeOpt


def register(app, **_):
    @app.command("edit")
    def edit_cmd(
        inp: Path = typer.Argument(..., metavar="IN", help="Pairs (the rejected response is edited), responses, or edits."),
        out: Path = typer.Argument(..., metavar="OUT", help="Output JSONL of edit records; a rerun resumes it."),
        editor: str = typer.Option("local:smollm2-135m-instruct", "--editor", "-e",
                                   help="local:MODEL_SPEC (in-process) or openai:MODEL (an OpenAI-compatible endpoint)."),
        base_url: str = typer.Option(None, "--base-url", help="Endpoint of openai:MODEL, e.g. http://127.0.0.1:8000/v1 "
                                     "(default: $OPENAI_BASE_URL, else OpenAI). Key: $FINEALIGN_EDITOR_API_KEY or $OPENAI_API_KEY."),
        concurrency: int = typer.Option(4, "--concurrency", "-c", help="Requests in flight at once (openai editor)."),
        retries: int = typer.Option(4, "--retries", help="Retries per request on 429, 5xx, timeouts (exponential backoff)."),
        timeout: float = typer.Option(60.0, "--timeout", help="Seconds per request (openai editor)."),
        backoff: float = typer.Option(1.0, "--backoff", help="First backoff in seconds; doubles per retry, at most 30."),
        max_ratio: float = typer.Option(0.5, "--max-ratio", help="Minimality guard: largest allowed edit ratio."),
        on_violation: str = typer.Option("flag", "--on-violation", help="flag (keep, marked in meta) | drop (to OUT.dropped.jsonl)."),
        limit: int = typer.Option(None, "--limit", help="Edit only the first N input records."),
        template: str = typer.Option("v1", "--template", help="Editing prompt version."),
        temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
        max_new_tokens: int = typer.Option(1024, "--max-new-tokens", help="Longest edit, in tokens."),
        batch_size: int = typer.Option(4, "--batch-size", help="Sequences decoded together (local editor)."),
        dtype: str = DtypeOpt,
        device: str = DeviceOpt,
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        """Ask an editor for the smallest change that makes each rejected response good; write prompt/original/edited.

        Failures (errors, timeouts, empty replies) go to OUT.failed.jsonl and are retried on the next run;
        the minimality guard flags or drops edits that change nothing or more than --max-ratio of the words.
        The JSON summary goes to stdout.
        """
        from ..edits.editors import make_editor
        from ..edits.minimality import MinimalityConfig
        from ..edits.run import EditJobConfig, read_edit_inputs, run_edits, summary_line
        from ..edits.template import get_template
        from ..errors import FinealignError
        from .common import console, out as stdout

        try:
            cfg = EditJobConfig(MinimalityConfig(max_ratio, on_violation), limit)
        except ValueError as e:
            raise FinealignError(str(e)) from None
        read_edit_inputs(inp)  # validate the whole input before loading any model
        tpl = get_template(template)
        if editor.startswith("local:"):
            console.print(f"loading {editor[6:]} ({dtype}) ...")
        ed = make_editor(editor, template=tpl, base_url=base_url, concurrency=concurrency, retries=retries,
                         timeout=timeout, backoff=backoff, temperature=temperature, max_new_tokens=max_new_tokens,
                         batch_size=batch_size, dtype=dtype, device=device)
        try:
            stats = run_edits(ed, inp, out, cfg, progress=not quiet)
        finally:
            ed.close()
        console.print(summary_line(stats), soft_wrap=True, highlight=False)
        stdout.print(json.dumps(stats.to_dict(), indent=2), soft_wrap=True, highlight=False, markup=False)
