"""``finealign generate`` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture()
def mt_bench_prompts(shared_data, tmp_path):
    """The 80 MT-Bench first turns as a prompt file (converted here, independent of the data adapters)."""
    out = tmp_path / "mt_bench.jsonl"
    with open(shared_data / "mt_bench_questions" / "question.jsonl") as src, open(out, "w") as f:
        for line in src:
            q = json.loads(line)
            f.write(json.dumps({"id": str(q["question_id"]), "prompt": q["turns"][0]}) + "\n")
    return out


def _cmd(prompts, out, *extra):
    return [sys.executable, "-m", "finealign.cli.main", "generate", "--model", "tiny-random", "--prompts",
            str(prompts), "--out", str(out), "-k", "2", "--max-new-tokens", "16", "--batch-size", "4",
            "--seed", "5", "--quiet", *extra]


def test_generate_killed_midway_resumes_to_the_uninterrupted_result(mt_bench_prompts, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    ref = tmp_path / "ref.jsonl"
    subprocess.run(_cmd(mt_bench_prompts, ref), check=True, env=env, capture_output=True)
    ref_rows = _lines(ref)
    assert len(ref_rows) == 80 * 2 and len({r["id"] for r in ref_rows}) == 160

    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(_cmd(mt_bench_prompts, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 30:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "generate finished before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    n_before = out.read_bytes().count(b"\n")
    assert 30 <= n_before < 160

    res = subprocess.run(_cmd(mt_bench_prompts, out), check=True, env=env, capture_output=True, text=True)
    rows = _lines(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == 160 and len(set(ids)) == 160
    assert f"skipped (already done): {n_before}" in res.stdout
    assert sorted(rows, key=lambda r: r["id"]) == sorted(ref_rows, key=lambda r: r["id"])
    assert out.read_text() == ref.read_text()  # same order too


def test_generate_cli_in_process(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Say {w}."}) for w in ("yes", "no", "maybe")) + "\n")
    out = tmp_path / "o.jsonl"
    args = ["generate", "--model", "tiny-random", "--prompts", prompts, "--out", out, "-k", "2",
            "--max-new-tokens", "5", "--temperature", "0.9", "--top-p", "0.8", "--seed", "3", "--batch-size", "3",
            "--dtype", "float32", "--device", "cpu", "--quiet"]
    assert run_cli(args) == 0
    rows = _lines(out)
    # ids come from 1-based line numbers since the records have none
    assert [r["id"] for r in rows] == ["1:0", "1:1", "2:0", "2:1", "3:0", "3:1"]
    assert all(r["meta"]["model"] == "tiny-random" and 0 <= r["meta"]["n_tokens"] <= 5 for r in rows)
    assert "responses written: 6" in capsys.readouterr().out
    assert run_cli(args) == 0
    assert "responses written: 0  skipped (already done): 6" in capsys.readouterr().out
    assert len(_lines(out)) == 6


def test_generate_cli_bad_input_exits_1_and_writes_nothing(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    out = tmp_path / "o.jsonl"
    assert run_cli(["generate", "--model", "tiny-random", "--prompts", bad, "--out", out, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: prompt: expected a string or a list of messages" in err
    assert not out.exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "fine"}\n')
    assert run_cli(["generate", "--model", "./no/such/model", "--prompts", good, "--out", out]) == 1
    assert "./no/such/model" in capsys.readouterr().err and not out.exists()
    assert run_cli(["generate", "--model", "tiny-random", "--prompts", good, "--out", out,
                    "--temperature", "-1"]) == 1
    assert "temperature" in capsys.readouterr().err and not out.exists()


# `finealign quickstart` is tested in tests/test_quickstart.py.
