"""Shared CLI helpers: consoles and progress bars (options come from the config dataclasses, ``cli/options.py``)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

# Messages and progress go to stderr, results to stdout. soft_wrap: a long line is one line (a terminal
# wraps it at its edge; a log file or pipe keeps sentences whole instead of breaking them at 80 columns).
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

resume_target: list = []  # [path] a running verb resumes into when it is not its config's ``out``


def resumes_into(path) -> None:
    """Name the folder a rerun of the running command resumes into, for the Ctrl-C hint, where the
    config's ``out`` does not (``finealign run`` without ``--out``: ``runs/NAME``)."""
    resume_target[:] = [str(path)]


def avg_speed(task) -> float | None:
    """Items per second since the task was added (items it started with, e.g. resumed ones, left out):
    steady where items come minutes apart, unlike rich's 30-second window."""
    done = task.completed - task.fields.get("first_completed", 0)
    return done / task.elapsed if task.elapsed and done > 0 else None


def eta_seconds(task) -> float | None:
    speed = avg_speed(task)
    return (task.total - task.completed) / speed if speed and task.total else None


def _hms(seconds: float) -> str:
    import datetime

    return str(datetime.timedelta(seconds=int(seconds)))


class RateColumn(ProgressColumn):
    """Items per second (``2.50/s``), or seconds per item when slower than one a second (``12.3 s/it``)."""

    def render(self, task) -> Text:
        return Text(rate_text(avg_speed(task)), style="progress.data.speed")


class EtaColumn(ProgressColumn):
    """Time left at the average rate so far (``-:--:--`` before the first item)."""

    def render(self, task) -> Text:
        eta = eta_seconds(task)
        return Text("-:--:--" if eta is None else _hms(eta), style="progress.remaining")


def rate_text(speed: float | None) -> str:
    """``2.50/s`` or ``12.3 s/it``; empty before the first item."""
    if not speed:
        return ""
    return f"{speed:.2f}/s" if speed >= 1 else f"{1 / speed:.1f} s/it"


class BarProgress(Progress):
    """rich's ``Progress`` whose tasks remember the count they started at (for the rate and ETA columns)."""

    def add_task(self, description, start=True, total=100.0, completed=0, visible=True, **fields):
        fields.setdefault("info", "")
        fields["first_completed"] = completed
        return super().add_task(description, start, total, completed, visible, **fields)


LOG_EVERY_S = 30.0  # a console that is not a terminal gets one progress line per task this often


class LineProgress(BarProgress):
    """Progress on a console that is not a terminal (a log file, a pipe, a CI job), where a live bar would
    print nothing until the end: one plain line per task when it starts, then at most every ``every``
    seconds as it advances, and when it completes, e.g. ``generate: 8/32 (25%), 0:04:10 elapsed, 31.2 s/it,
    ETA 0:12:30, 12.1 tok/s``."""

    def __init__(self, *columns, every: float = LOG_EVERY_S, **kw):
        super().__init__(*columns, **{**kw, "disable": True})
        self._every, self._last, self._done = every, {}, set()
        self._out = kw.get("console") or console

    def add_task(self, description, *args, **kw):
        task_id = super().add_task(description, *args, **kw)
        self._log(task_id, force=True)
        return task_id

    def update(self, task_id, **kw) -> None:
        super().update(task_id, **kw)
        self._log(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id, force: bool = False) -> None:
        task = self._tasks[task_id]
        now = self.get_time()
        finished = task.total is not None and task.completed >= task.total
        if finished and task_id in self._done:
            return
        if not (force or finished or now - self._last.get(task_id, now) >= self._every):
            return
        self._last[task_id] = now
        if finished:
            self._done.add(task_id)
        self._out.print(progress_line(task), highlight=False, markup=False, soft_wrap=True)


def progress_line(task) -> str:
    """One plain line of a rich ``Task``: count, share, elapsed, rate, ETA and its ``info`` field."""
    parts = [f"{task.description}: {int(task.completed)}" + (f"/{int(task.total)}" if task.total else "")]
    if task.total:
        parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
    parts.append(f"{_hms(task.elapsed or 0)} elapsed")
    speed = avg_speed(task)
    if speed:
        parts.append(rate_text(speed))
    eta = eta_seconds(task)
    if eta is not None and task.completed < task.total:
        parts.append(f"ETA {_hms(eta)}")
    info = str(task.fields.get("info") or "")
    return ", ".join(parts) + (f", {info}" if info else "")


def progress(disable: bool = False, **kw) -> Progress:
    """A rich progress bar with count, elapsed time, rate, remaining time (ETA), plus a free ``info`` field.

    Add tasks with ``p.add_task("label", total=n, info="")`` and update ``info`` (e.g. tokens/s). On a
    console that is not a terminal the bar becomes plain lines (:class:`LineProgress`), so a run logged
    to a file still shows it is alive.
    """
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               RateColumn(), EtaColumn(), TextColumn("{task.fields[info]}"))
    target = kw.pop("console", console)
    if not disable and not target.is_terminal:
        return LineProgress(*columns, console=target, transient=False, **kw)
    return BarProgress(*columns, console=target, transient=False, disable=disable, **kw)


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


@contextmanager
def verb_hooks(quiet: bool = False, *, steps: bool = False):
    """The ``verbs.run.Hooks`` of a command: one rich bar per progress label on stderr, log lines on stderr
    (``steps``: also one line per trainer logging step, none with ``quiet``).

    Use ``with verb_hooks(quiet) as h: result = run_verb("generate", cfg, h)``, then print the result."""
    from ..verbs.run import Hooks

    with progress(disable=quiet) as bar:
        tasks: dict = {}

        def progress_for(label: str):
            def update(done: int, total: int, info: str = "") -> None:
                if label not in tasks:
                    tasks[label] = bar.add_task(label, total=total, completed=done, info=info)
                else:
                    bar.update(tasks[label], completed=done, total=total, info=info)

            return update

        yield Hooks(progress=progress_for, log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True),
                    steps=steps and not quiet)
