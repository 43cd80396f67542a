"""``finealign report`` on a hand-made run folder: what is read from each stage, and the page it makes."""

from __future__ import annotations

import json
import re

from conftest import run_cli
from finealign.report.run_data import curves, load_run, reward_rows, winrate_rows


def _w(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def _run(tmp_path):
    run = tmp_path / "run"
    _w(run / "run.json", {"recipe": "demo", "scale": "tiny", "stages": [
        {"name": "check", "type": "eval-rm"}, {"name": "ppo", "type": "train-ppo"},
        {"name": "wr", "type": "eval-winrate"}, {"name": "later", "type": "train-dpo"}]})
    done = {"type": "?", "settings": {"k": 1}, "seconds": 2.0, "summary": {}}
    for name, typ in (("check", "eval-rm"), ("ppo", "train-ppo"), ("wr", "eval-winrate")):
        _w(run / name / ".finealign-stage.json", {**done, "type": typ})
    _w(run / "check" / "results.json", {"scorer": "flr:m", "benchmark": "pairs.jsonl", "metrics": {
        "scorer": {"overall": {"accuracy": 0.625, "ci_low": 0.4, "ci_high": 0.8, "n": 16}},
        "length": {"overall": {"accuracy": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n": 16}}}})
    _w(run / "ppo" / "metrics.jsonl", "".join(json.dumps({"step": i, "score": 0.1 * i, "kl": 0.01 * i, "pg_loss": -i})
                                             + "\n" for i in (1, 2, 3)))
    _w(run / "wr" / "results.json", {"win_rate": 0.75, "win_rate_ci": [0.5, 1.0], "win_rate_se": 0.1,
                                     "lc_win_rate": None, "lc_status": "not estimable",
                                     "lc_warning": "length-controlled win rate not estimable: separation",
                                     "judge_paths": {"logprob": 5, "parsed": 2, "tie": 1, "score": 0},
                                     "n": 4, "wins": 3, "ties": 0, "losses": 1,
                                     "judge": "pairwise:m", "warning": "judge m is at chance",
                                     "judge_check": {"benchmark": "pairs.jsonl", "n": 16, "accuracy": 0.5,
                                                     "ci_low": 0.25, "ci_high": 0.75, "evidence": False}})
    _w(run / "wr" / "pairs.jsonl", json.dumps({"prompt_id": "a", "prompt": "Say <hi>", "output": "new & better",
                                               "reference": "old answer", "preference": 1.0}) + "\n")
    (run / "later").mkdir()
    _w(run / "later" / ".finealign-started.json", {"fingerprint": "x"})  # started, never finished
    return run


def test_run_data_reads_each_stage(tmp_path):
    run = load_run(_run(tmp_path))
    assert [(s.name, s.status) for s in run.stages] == [("check", "done"), ("ppo", "done"), ("wr", "done"),
                                                         ("later", "incomplete")]
    [row] = reward_rows([run])
    assert (row["value"], row["ci"], row["length"], row["length_ci"]) == (0.625, [0.4, 0.8], 0.5, [0.3, 0.7])
    c = curves(run.stages[1])
    # PPO: the loss is the policy-gradient loss, the reward the RM score, KL the per-sequence KL
    assert c == {"loss (pg_loss)": [(1.0, -1.0), (2.0, -2.0), (3.0, -3.0)],
                 "reward (score)": [(1.0, 0.1), (2.0, 0.2), (3.0, 0.30000000000000004)],
                 "KL (kl)": [(1.0, 0.01), (2.0, 0.02), (3.0, 0.03)]}
    assert winrate_rows([run])[0]["win_rate"] == 0.75
    from finealign.report.build import summary_lines

    [line] = [x for x in summary_lines([run]) if "win rate" in x]
    assert "LC not estimable" in line and "8 verdicts: 5 log-probability, 2 parsed, 1 tie" in line


def test_report_page(tmp_path, capsys):
    run = _run(tmp_path)
    assert run_cli(["report", run]) == 0
    page = (run / "report.html").read_text()
    assert "demo/wr" in page and "0.750" in page and "[0.500, 1.000]" in page  # the win rate and its interval
    assert "no: interval includes 0.5" in page and "judge m is at chance" in page  # the judge's validation
    # beside the win rate: the judge's verdict paths and the LC status with its warning
    assert "<td>5 / 2 / 1</td>" in page and ">not estimable</td>" in page
    assert "length-controlled win rate not estimable: separation" in page
    assert "Say &lt;hi&gt;" in page and "new &amp; better" in page and "<hi>" not in page  # escaped samples
    assert len(re.findall(r"data:image/png;base64,", page)) == 3  # win-rate bars, accuracy bars, PPO curves
    assert "No token reward model" in page and not re.search(r"https?://", page)
    assert run_cli(["report", tmp_path / "nothing"]) == 1
    assert "no such run folder" in capsys.readouterr().err
