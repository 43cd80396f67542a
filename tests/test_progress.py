"""A run that shows it is alive: progress with rate and ETA on a terminal and as plain lines in a log file,
a generate chunk that reports its token rate while it decodes, and TRL trainers that report every step."""

from __future__ import annotations

import io
import json

from rich.console import Console

from finealign.cli.common import BarProgress, LineProgress, avg_speed, eta_seconds, progress, progress_line


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _log_console():
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def test_a_console_that_is_not_a_terminal_gets_plain_lines():
    con, buf = _log_console()
    assert isinstance(progress(console=con), LineProgress)
    assert not isinstance(progress(console=con, disable=True), LineProgress)
    assert isinstance(progress(console=Console(file=io.StringIO(), force_terminal=True)), BarProgress)


def test_lines_carry_count_rate_and_eta_and_are_rate_limited():
    con, buf = _log_console()
    clock = Clock()
    with LineProgress(console=con, every=30, get_time=clock) as p:
        task = p.add_task("generate", total=10, completed=2, info="")  # 2 resumed
        clock.t = 10
        p.update(task, completed=4, info="12.0 tok/s")  # 10 s after the first line: not yet
        clock.t = 40
        p.update(task, completed=6, info="12.5 tok/s")
        clock.t = 80
        p.advance(task, 4)
        p.update(task, completed=10)  # finished once: one line
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("generate: 2/10 (20%), 0:00:00 elapsed")
    # 4 items since the start in 40 s: 10 s an item; 4 left -> 40 s
    assert lines[1] == "generate: 6/10 (60%), 0:00:40 elapsed, 10.0 s/it, ETA 0:00:40, 12.5 tok/s"
    assert lines[2].startswith("generate: 10/10 (100%), 0:01:20 elapsed") and "ETA" not in lines[2]


def test_rate_and_eta_leave_out_the_items_a_task_started_with():
    clock = Clock()
    p = BarProgress(disable=True, get_time=clock)
    task = p.add_task("x", total=100, completed=50)
    t = p.tasks[0]
    assert avg_speed(t) is None and eta_seconds(t) is None
    clock.t = 5
    p.update(task, completed=60)
    assert avg_speed(t) == 2.0 and eta_seconds(t) == 20.0
    assert "2.00/s" in progress_line(t) and "ETA 0:00:20" in progress_line(t)


def test_generate_reports_token_rate_inside_a_chunk(tmp_path, monkeypatch):
    import finealign.generate_job as generate_job
    import finealign.generation as generation

    monkeypatch.setattr(generate_job, "HEARTBEAT_S", 0.0)  # the generate job owns progress
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Say {i}."}) + "\n" for i in range(2)))
    calls = []
    generation.generate_file("tiny-random", prompts, tmp_path / "r.jsonl", k=2, batch_size=8, max_new_tokens=6,
                             on_progress=lambda d, t, info: calls.append((d, t, info)))
    # one chunk (4 rows): the start, the end, and reports while it decoded, each with a token rate
    assert calls[0] == (0, 4, "") and calls[-1][0] == 4
    during = [c for c in calls[1:-1] if c[0] == 0]
    assert during and all(c[2].endswith(" tok/s") for c in during)


def test_trl_trainer_reports_every_step(tmp_path):
    from finealign.train.preference import PrefTrainConfig, train_preference

    rows = [{"prompt": f"Tell me about {w}.", "chosen": f"{w} is worth a look.", "rejected": "No."}
            for w in ("the sea", "France", "a fox", "poems")]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    steps = []
    cfg = PrefTrainConfig(method="dpo", model="tiny-random", data=str(data), out=str(tmp_path / "o"), steps=3,
                          batch_size=2, max_length=64, logging_steps=1, lora=False)
    train_preference(cfg, on_step=lambda s, total, m: steps.append((s, total, m.get("loss"))))
    assert [s for s, _, _ in steps] == [0, 1, 2, 3] and {t for _, t, _ in steps} == {3}
    assert all(isinstance(loss, float) for _, _, loss in steps[2:])  # logged every step from step 1 on
