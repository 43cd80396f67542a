"""Shared CLI helpers: consoles, progress bars, option types."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)  # messages and progress go to stderr; results to stdout
out = Console()


def progress(disable: bool = False, **kw) -> Progress:
    """A rich progress bar with count, elapsed and remaining time, plus a free ``info`` field.

    Add tasks with ``p.add_task("label", total=n, info="")`` and update ``info`` (e.g. tokens/s).
    """
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=False, disable=disable, **kw,
    )


ModelOpt = typer.Option("smollm2-135m-instruct", "--model", "-m",
                        help="Model spec: built-in name, .gguf file, local directory or hub id.")
DtypeOpt = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16")
DeviceOpt = typer.Option("auto", "--device", help="cpu | cuda | auto")
