"""Shared CLI helpers: consoles and progress bars (options come from the config dataclasses, ``cli/options.py``)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

# Messages and progress go to stderr, results to stdout. soft_wrap: a long line is one line (a terminal
# wraps it at its edge; a log file or pipe keeps sentences whole instead of breaking them at 80 columns).
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

resume_target: list = []  # [path] a running verb resumes into when it is not its config's ``out``


def resumes_into(path) -> None:
    """Name the folder a rerun of the running command resumes into, for the Ctrl-C hint, where the
    config's ``out`` does not (``finealign run`` without ``--out``: ``runs/NAME``)."""
    resume_target[:] = [str(path)]


def progress(disable: bool = False, **kw) -> Progress:
    """A rich progress bar with count, elapsed and remaining time, plus a free ``info`` field.

    Add tasks with ``p.add_task("label", total=n, info="")`` and update ``info`` (e.g. tokens/s).
    """
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        console=console, transient=False, disable=disable, **kw,
    )


@contextmanager
def progress_callback(label: str, *, disable: bool = False):
    """A rich progress bar driven by a library callback ``on_progress(done, total, info)``.

    Use ``with progress_callback("generate", disable=quiet) as cb: generate_file(..., on_progress=cb)``:
    the library reports progress without importing the CLI.
    """
    with progress(disable=disable) as bar:
        task = None

        def update(done: int, total: int, info: str = "") -> None:
            nonlocal task
            if task is None:
                task = bar.add_task(label, total=total, completed=done, info=info)
            else:
                bar.update(task, completed=done, total=total, info=info)

        yield update

