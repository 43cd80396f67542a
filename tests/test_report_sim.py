"""The report's sim section (``report.sim_section``): the gold-curve plot, the HTML table and the Markdown table
the README shows, all from a study dict made by ``summarize_ppo`` over hand-made curves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _study():
    from finealign.studies.sim_summary import summarize_ppo

    def run(gran, seed, golds):
        return {"task": "constraints", "reward": "gold", "granularity": gran, "seed": seed,
                "curve": [{"step": i + 1, "gold": g, "proxy": g, "kl": 0.5, "response_length": 10.0}
                          for i, g in enumerate(golds)]}

    # token runs rise by step 4 and 5, sequence runs by step 6 (both seeds): steps 4.5 vs 6 -> ratio 6 / 4.5
    runs = [run("token", 0, [0, .2, .4, .6, .8, .8, .8]), run("token", 1, [0, .1, .3, .5, .7, .8, .8]),
            run("sequence", 0, [0, 0, .1, .2, .4, .6, .6]), run("sequence", 1, [0, 0, .1, .2, .4, .6, .6])]
    return {"ppo": summarize_ppo(runs, 0.5), "ppo_curves": runs}


def test_markdown_table_reports_the_summary():
    from finealign.report.sim_section import markdown_table

    study = _study()
    s = study["ppo"]["constraints"]
    tok, seq = s["by_run"]["gold/token"], s["by_run"]["gold/sequence"]
    lines = markdown_table(study).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| constraints | gold | ")
    ratio = s["steps_ratio"]["gold"]["ratio"]
    assert ratio == pytest.approx(seq["mean_steps_to_target"] / tok["mean_steps_to_target"])
    assert f"{ratio:.2f} [" in lines[2] and f"{tok['final_gold']:.2f}" in lines[2]
    assert "censored" not in lines[2]


def test_html_section_plot_and_table():
    from finealign.report.sim_section import sim_section_html

    page = sim_section_html(_study())
    assert page.startswith("<img alt='gold reward per PPO step, token vs sequence' src='data:image/png;base64,")
    assert page.count("<tr>") == 2 and "<td>constraints</td><td>gold</td>" in page
    assert "ran no PPO" in sim_section_html({"ppo": {}})


def test_markdown_table_command(tmp_path):
    path = tmp_path / "study.json"
    path.write_text(json.dumps(_study()))
    r = subprocess.run([sys.executable, "-m", "finealign.report.sim_section", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.splitlines()[2].startswith("| constraints | gold |")


def test_markdown_table_with_another_target_fraction(tmp_path):
    """--target-frac summarises the same curves again: at 0.9 of the gap (target 0.72) the token runs need
    steps 5 and 6, the sequence runs never reach it (their last 3 steps average 0.6): a censored ratio."""
    from finealign.report.sim_section import main

    path = tmp_path / "study.json"
    path.write_text(json.dumps(_study()))
    lines = main([str(path), "--target-frac", "0.9"]).splitlines()
    assert "(censored: sequence)" in lines[2] and "(0 of 2)" in lines[2]
    assert "censored" not in main([str(path)]).splitlines()[2]


def test_markdown_table_says_why_a_task_has_no_target():
    from finealign.report.sim_section import markdown_table
    from finealign.studies.sim_summary import summarize_ppo

    # gold runs that end below their first batch (0 -> -.1): no target, so "n/a" steps, and a note says why
    runs = [{"task": "arithmetic", "reward": "gold", "granularity": g, "seed": 0,
             "curve": [{"step": i + 1, "gold": v, "proxy": v, "kl": 0.1} for i, v in enumerate([0, -.1, -.1, -.1])]}
            for g in ("token", "sequence")]
    text = markdown_table({"ppo": summarize_ppo(runs, 0.5), "ppo_curves": runs})
    assert "n/a" in text and "- arithmetic: no target, so no steps" in text
    assert "no target" not in markdown_table(_study())
