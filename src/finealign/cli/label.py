"""``finealign label``: score k responses per prompt and write DPO pairs or KTO labels (TRL formats).

Flags are generated from :class:`~finealign.verbs.settings.LabelCommandConfig`: the library's
:class:`~finealign.train.labeling.LabelConfig`, the engine options and the files. The verb runs through
the verb table (``finealign.verbs``); this module prints.
"""

from __future__ import annotations

from ..verbs.settings import LabelCommandConfig


def run_label(cfg: LabelCommandConfig, quiet: bool = False) -> None:
    from ..verbs import run_verb
    from .common import out as stdout, verb_hooks

    with verb_hooks(quiet) as hooks:
        st = run_verb("label", cfg, hooks)
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(st.dropped.items())) or "none"
    unit = "pairs" if cfg.format == "dpo" else "labeled responses"
    stdout.print(f"prompts: {st.prompts}  responses: {st.responses} ({st.empty} empty, scored as they are)  "
                 f"{unit} written: {st.written}  "
                 f"dropped ({'prompts' if cfg.format == 'dpo' else 'responses'}): {dropped}  -> {cfg.out}",
                 soft_wrap=True, highlight=False, markup=False)


def register(app, **_):
    from .options import command_from_row

    command_from_row(app, "label", run_label)
