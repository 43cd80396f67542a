"""``finealign quickstart``: both recipes, the combined report and the five-line summary; the bundled data."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli


def test_bundled_data_is_attributed_and_readable():
    from finealign.cli.quickstart import demo_prompts_path
    from finealign.data.io import read_records
    from finealign.data.prompts import read_prompts
    from finealign.pipeline.recipe import bundled_dir

    d = bundled_dir()
    notice = (d / "NOTICE").read_text()
    assert "Apache License" in notice and "MIT License" in notice and "Copyright (c) 2023 Chaitanya Malaviya" in notice
    train, evals = read_prompts(d / "mt_bench_train.jsonl"), read_prompts(d / "mt_bench_eval.jsonl")
    assert len(train) == len(evals) == 40 and not {p.id for p in train} & {p.id for p in evals}
    edits, pairs = read_records(d / "expertqa_edits_train.jsonl"), read_records(d / "expertqa_pairs_eval.jsonl")
    assert edits[0].kind == "edit" and pairs[0].kind == "pair"
    assert all(e.original != e.edited for e in edits)
    assert not {e.prompt for e in edits} & {p.prompt for p in pairs}  # held-out questions
    assert (demo_prompts_path().parent / "NOTICE").exists()


def test_quickstart_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    assert run_cli(["quickstart", "--scale", "tiny", "--out", out, "--quiet"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 5, printed  # the five-line summary
    assert printed[0].startswith("quickstart (scale tiny): 2 recipes, 20 stages")
    assert "FLR-DPO" in printed[1] and "PPO token-level" in printed[2] and "token RM" in printed[3]
    assert printed[4] == f"report: {out / 'report.html'}"
    for run in ("flr-dpo", "fine-grained-ppo"):
        stages = json.loads((out / run / "run.json").read_text())["stages"]
        assert all((out / run / s["name"] / ".finealign-stage.json").exists() for s in stages)
    page = (out / "report.html").read_text()
    for stage in ("winrate-dpo", "winrate-kto", "winrate-token", "winrate-sequence", "flr-check", "rm-check"):
        assert stage in page
    assert len(re.findall(r"data:image/png;base64,", page)) >= 6 and not re.search(r"https?://", page)
    table = (out / "summary.md").read_text()
    assert "`finealign quickstart --scale tiny`" in table and "| fine-grained-ppo/winrate-token" in table

    # a rerun redoes nothing but the report
    marker = out / "fine-grained-ppo" / "ppo-token" / ".finealign-stage.json"
    before = marker.stat().st_mtime_ns
    assert run_cli(["quickstart", "--scale", "tiny", "--out", out, "--quiet"]) == 0
    assert marker.stat().st_mtime_ns == before
    assert len(capsys.readouterr().out.strip().splitlines()) == 5


def test_quickstart_with_the_sim_study(tmp_path):
    """``sim=True`` (on by default at every scale but tiny) first runs a 1-seed slice of the sim study's --fast
    preset (gold reward, token and sequence level, on a `sim policy` model: a tiny one at scale tiny): its
    study.json under OUT/sim-study, a summary line built from it leading the summary, its curves in the report."""
    from finealign.cli.quickstart import run_quickstart

    tiny = ["--n", "8", "--heldout", "4", "--k", "2", "--max-new-tokens", "6", "--ppo-steps", "3", "--ppo-batch",
            "4", "--group", "2", "--eval-k", "1"]
    out = tmp_path / "qs"
    res = run_quickstart(out, scale="tiny", sim=True, sim_args=tiny, log=lambda m: None, quiet=True)
    study = json.loads((out / "sim-study" / "study.json").read_text())
    st = study["settings"]
    assert st["fast"] and st["tasks"] == ["constraints"] and st["ppo_rewards"] == ["gold"] and st["ppo_seeds"] == [0]
    assert json.loads((out / "sim-study" / "policies" / "constraints" / "sim_policy.json").read_text())["status"] == "done"
    assert len(res.summary) == 6 and res.summary[5] == f"report: {out / 'report.html'}"
    line = res.summary[0]
    # the line reports the study's own figures: first-batch gold and each granularity's final gold
    s = study["ppo"]["constraints"]
    assert line.startswith("sim testbed, PPO with the gold reward (token / sequence level): constraints ")
    assert f"{s['initial_gold']:.2f} -> token {s['by_run']['gold/token']['final_gold']:.2f}" in line
    assert f"sequence {s['by_run']['gold/sequence']['final_gold']:.2f}" in line
    assert line in (out / "summary.md").read_text() and (out / "sim-study" / "plot_ppo.png").exists()
    assert res.paths["sim-study"] == out / "sim-study"
    page = (out / "report.html").read_text()
    # the sim section comes right after the summary, before the win rates
    assert page.index("id='summary'") < page.index("id='sim'") < page.index("id='winrates'")
    assert "gold reward per PPO step, token vs sequence" in page


def test_quickstart_bad_scale(tmp_path, capsys):
    assert run_cli(["quickstart", "--scale", "huge", "--out", tmp_path / "qs"]) == 1
    err = capsys.readouterr().err
    assert "huge" in err and "tiny, default, full" in err and not (tmp_path / "qs").exists()


@pytest.mark.slow
def test_quickstart_default_model_small_budget(tmp_path, capsys):
    """The real default model through every stage of both recipes, on budgets cut to the bone."""
    out = tmp_path / "qs"
    small = ["n_train=2", "k=2", "n_eval=2", "n_check=4", "n_edit=2", "max_new_tokens=16", "epochs=1", "rm_steps=2",
             "rm_batch_size=2", "ppo_steps=1", "ppo_batch_size=2", "ppo_epochs=1"]
    # --no-sim: the sim slice trains a small policy of its own (tested at scale tiny), not the default model
    args = ["quickstart", "--out", out, "--quiet", "--no-sim"] + [a for v in small for a in ("--var", v)]
    assert run_cli(args) == 0
    printed = capsys.readouterr().out
    assert "quickstart (scale default)" in printed
    init = [json.loads(x) for x in (out / "flr-dpo" / "initial" / "responses.jsonl").read_text().splitlines()]
    assert init and all(r["meta"]["model"] == "smollm2-135m-instruct" for r in init)
    assert sum(len(r["completion"].split()) >= 3 for r in init) >= 1  # a real model answers in words
    assert (out / "report.html").stat().st_size > 10_000
