"""``finealign edit``: minimal edits of rejected responses by a local model or an OpenAI-compatible endpoint.

Flags are generated from :class:`~finealign.verbs.settings.EditConfig` (``--config`` reads the same fields
from YAML); the verb runs through the verb table (``finealign.verbs``); this module prints.
"""

from __future__ import annotations

from ..data.io import to_json
from ..verbs.settings import EditConfig


def run_edit(cfg: EditConfig, quiet: bool = False) -> None:
    """Validate the input, load the editor, edit (resumably); summary line on stderr, JSON on stdout."""
    from ..edits.run import summary_line
    from ..verbs import run_verb
    from .common import console, out as stdout, verb_hooks

    if cfg.editor.startswith("local:"):
        console.print(f"loading {cfg.editor[6:]} ({cfg.dtype}) ...")
    with verb_hooks(quiet) as hooks:
        stats = run_verb("edit", cfg, hooks)
    console.print(summary_line(stats), soft_wrap=True, highlight=False)
    stdout.print(to_json(stats.to_dict(), indent=2), soft_wrap=True, highlight=False, markup=False)


def register(app, **_):
    from .options import command_from_row

    command_from_row(app, "edit", run_edit)
