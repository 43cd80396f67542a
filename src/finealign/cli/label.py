"""``finealign label``: score k responses per prompt and write DPO pairs or KTO labels (TRL formats)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app, **_):
    @app.command("label")
    def label_cmd(
        src: Path = typer.Argument(..., help="Responses from `finealign generate` (prompt_id, sample, prompt, completion)."),
        dst: Path = typer.Argument(..., help="Output JSONL: prompt/chosen/rejected (dpo) or prompt/completion/label (kto)."),
        scorer: str = typer.Option(..., "--scorer", "-s", help="Scorer spec, e.g. flr:smollm2-135m-instruct"),
        fmt: str = typer.Option("dpo", "--format", "-f", help="dpo | kto"),
        margin: float = typer.Option(0.0, "--margin", help="Keep a prompt only when best - worst > MARGIN "
                                     "(0: drop only ties)."),
        top_frac: float = typer.Option(0.5, "--top-frac", help="KTO: share of each prompt's responses labeled desirable."),
        conversational: bool = typer.Option(True, "--conversational/--standard", help="Write chat messages (TRL "
                                            "conversational format) or plain strings."),
        max_chars: Optional[int] = typer.Option(None, "--max-chars", help="Cut responses before scoring."),
        batch_size: int = typer.Option(8, "--batch-size", help="Responses per scorer call."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ):
        """Label sampled responses with a scorer: DPO pairs (best vs worst) or KTO labels."""
        from ..train.labeling import LabelConfig, label_file
        from .common import out as stdout, progress

        cfg = LabelConfig(format=fmt, margin=margin, top_frac=top_frac, conversational=conversational,
                          max_chars=max_chars, batch_size=batch_size)
        with progress(disable=quiet) as p:
            task = p.add_task("scoring", total=None, info="")
            st = label_file(scorer, src, dst, cfg, on_total=lambda n: p.update(task, total=n),
                            on_progress=lambda n: p.advance(task, n))
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(st.dropped.items())) or "none"
        unit = "pairs" if fmt == "dpo" else "labeled responses"
        stdout.print(f"prompts: {st.prompts}  responses: {st.responses}  {unit} written: {st.written}  "
                     f"dropped ({'prompts' if fmt == 'dpo' else 'responses'}): {dropped}  -> {dst}",
                     soft_wrap=True, highlight=False, markup=False)
