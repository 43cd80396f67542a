"""Quiet output (issue 17, fault 7): no library bars or deprecation warnings on model load or while
decoding, library bars under ``--quiet``, no raw metric dicts from TRL on stdout, status lines that
do not wrap when the output is not a terminal, and a tested upper bound on transformers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys


from conftest import REPO, run_cli


def _python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


def test_model_load_and_decoding_print_nothing():
    # a fresh process: transformers warns each deprecation once per process
    proc = _python("from finealign.models import load_model\n"
                   "from finealign.generation import generate_batch\n"
                   "m, t = load_model('tiny-random')\n"
                   "print(generate_batch(m, t, ['hi'], max_new_tokens=4, temperature=0)[0][0] is not None)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    err = proc.stderr
    assert "Loading weights" not in err and "it/s" not in err  # transformers' loading bar
    assert "past_key_values" not in err and "deprecated" not in err.lower(), err


def test_quiet_silences_library_progress_bars(monkeypatch, tmp_path):
    """``-q`` reaches the libraries: while the verb runs their bars are off; afterwards they are back."""
    from transformers.utils import logging as hf_logging

    import finealign.generation as generation

    seen = {}

    def fake_generate_file(*a, **k):
        seen["hf"] = hf_logging.is_progress_bar_enabled()
        seen["tqdm"] = os.environ.get("TQDM_DISABLE")
        raise SystemExit(0)

    monkeypatch.setattr(generation, "generate_file", fake_generate_file)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    for quiet, expect_bars in ((["-q"], False), ([], True)):
        seen.clear()
        run_cli(["generate", "--model", "tiny-random", "--prompts", prompts, "--out", tmp_path / "o.jsonl", *quiet])
        assert seen["hf"] is expect_bars and (seen["tqdm"] == "1") is (not expect_bars)
    assert hf_logging.is_progress_bar_enabled()


def test_status_lines_do_not_wrap_when_not_a_terminal():
    from finealign.cli.common import console, out

    sentence = "scored 123 responses now (0 from the cache) in 4.5 s -> " + "/a/rather/long/path" * 8 + "/results.json"
    for c in (console, out):
        assert not c.is_terminal  # pytest captures: not a terminal
        with c.capture() as cap:
            c.print(sentence)
        assert cap.get() == sentence + "\n"  # one line, unbroken


def test_train_dpo_prints_no_raw_metrics_dict(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Good answer {i}.",
                                         "rejected": f"Bad {i}."}) + "\n" for i in range(4)))
    rc = run_cli(["train", "dpo", "--data", pairs, "--out", tmp_path / "dpo", "--model", "tiny-random",
                  "--max-steps", "2", "--batch-size", "2", "--logging-steps", "1", "--lora"])
    assert rc == 0
    captured = capsys.readouterr()
    assert not re.search(r"\{'[a-z_/]+': ", captured.out), captured.out  # no Python dict reprs on stdout
    assert "dpo: 2 steps" in captured.out


def test_transformers_upper_bound_holds_for_the_tested_version():
    """pyproject bounds transformers above; CI installs within the bounds, so the version the tests
    run on is one the bound allows."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    text = (REPO / "pyproject.toml").read_text()
    spec = next(Requirement(m) for m in re.findall(r'"(transformers[^"]*)"', text))
    assert any(s.operator in ("<", "<=", "~=", "==") for s in spec.specifier), f"no upper bound: {spec}"
    assert spec.specifier.contains(version("transformers"), prereleases=True)


def test_quiet_dpo_run_prints_only_finealign_lines(tmp_path):
    """Under -q, a DPO run's stderr holds finealign's own status line only: no library bars, no
    deprecation warnings one library raises about another (fresh process: warnings show once)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."}) + "\n"
                             for i in range(4)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "finealign.cli.main", "train", "dpo", "--data", str(pairs), "--out",
                           str(tmp_path / "o"), "--model", "tiny-random", "--steps", "1", "--batch-size", "2", "--lora",
                           "-q"], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith("dpo: 1 steps") and len(proc.stdout.strip().splitlines()) == 1
    assert "Warning" not in proc.stderr and "%|" not in proc.stderr, proc.stderr
