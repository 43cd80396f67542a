"""``finealign generate``: sample k completions per prompt into a resumable JSONL file.

Flags are generated from :class:`~finealign.verbs.settings.GenerateConfig` (``--config`` reads the same
fields from YAML); the verb runs through the verb table (``finealign.verbs``); this module prints.
"""

from __future__ import annotations

from pathlib import Path

from ..verbs.settings import GenerateConfig


def run_generate(cfg: GenerateConfig, quiet: bool = False) -> None:
    from ..verbs import run_verb
    from .common import console, out as stdout, verb_hooks

    console.print(f"loading {cfg.model} ({cfg.dtype}) ...")
    with verb_hooks(quiet) as hooks:
        stats = run_verb("generate", cfg, hooks)
    stdout.print(
        f"prompts: {stats.prompts}  responses written: {stats.responses_written}  "
        f"skipped (already done): {stats.skipped}  empty: {stats.empty}  "
        f"hit max-new-tokens: {stats.truncated}  tokens/s: {stats.tokens_per_s:.1f}  -> {Path(cfg.out)}",
        soft_wrap=True, highlight=False)
    if getattr(stats, "prompts_cut", 0):  # docs/long-inputs.md: the oldest context went first
        stdout.print(f"prompts cut to fit the window: {stats.prompts_cut} (their oldest context; "
                     "meta.prompt_cut_tokens on their lines)", soft_wrap=True, highlight=False)


def register(app, **_):
    from .options import command_from_row

    command_from_row(app, "generate", run_generate)
