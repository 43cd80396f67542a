"""``finealign generate``: sample k completions per prompt into a resumable JSONL file."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import DeviceOpt, DtypeOpt, ModelOpt


def register(app, **_):
    @app.command("generate")
    def generate_cmd(
        model: str = ModelOpt,
        prompts: Path = typer.Option(..., "--prompts", "-p", help="Prompt-bearing file (.jsonl/.json/.csv/.parquet)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output JSONL of responses; a rerun resumes it."),
        k: int = typer.Option(4, "-k", "--k", help="Completions per prompt."),
        temperature: float = typer.Option(0.7, "--temperature", help="0 = greedy."),
        top_p: float = typer.Option(0.9, "--top-p"),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
        seed: int = typer.Option(0, "--seed", help="Base seed; sample j of prompt p is seeded from (seed, p, j)."),
        batch_size: int = typer.Option(8, "--batch-size", help="Sequences decoded together."),
        dtype: str = DtypeOpt,
        device: str = DeviceOpt,
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        """Sample K completions per prompt (chat template, batched, resumable) into OUT."""
        from ..generation import generate_file
        from .common import console
        from .common import out as stdout

        console.print(f"loading {model} ({dtype}) ...")
        stats = generate_file(model, prompts, out, k=k, temperature=temperature, top_p=top_p,
                              max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, dtype=dtype,
                              device=device, progress=not quiet)
        stdout.print(
            f"prompts: {stats.prompts}  responses written: {stats.responses_written}  "
            f"skipped (already done): {stats.skipped}  empty: {stats.empty}  "
            f"hit max-new-tokens: {stats.truncated}  tokens/s: {stats.tokens_per_s:.1f}  -> {out}",
            soft_wrap=True, highlight=False)
