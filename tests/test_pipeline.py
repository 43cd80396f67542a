"""``finealign run``: recipe checks (file:line:field), stage selection, resume / rerun, and a full tiny recipe
through ``finealign run`` and ``finealign report``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from finealign.errors import ConfigError, FinealignError
from finealign.pipeline.recipe import load_recipe
from finealign.pipeline.runner import MARKER, plan, run_recipe, select

PROMPTS = [{"id": "p1", "prompt": "What is the capital of France?"}, {"id": "p2", "prompt": "Write a short poem."}]


def _prompts(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    return p


def _recipe(tmp_path: Path, body: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(body.replace("PROMPTS", str(_prompts(tmp_path))))
    return p


SMALL = """\
name: small
vars:
  tokens: 4
stages:
  - name: gen
    type: generate
    model: tiny-random
    prompts: PROMPTS
    k: 1
    max_new_tokens: ${vars.tokens}
  - name: scored
    type: score
    input: ${stages.gen.out}
    scorer: length
"""


# ---------------------------------------------------------------------------------------------- checks


@pytest.mark.parametrize("body, line, words", [
    # an unknown stage type: named with its line (3) and the known types
    ("name: x\nstages:\n  - type: genrate\n    model: tiny-random\n", 3, ["genrate", "did you mean generate"]),
    # an unknown setting: line 5 is `temprature:`
    ("stages:\n  - type: generate\n    model: tiny-random\n    prompts: PROMPTS\n    temprature: 0.5\n", 5,
     ["temprature", "did you mean temperature"]),
    # a setting the runner owns
    ("stages:\n  - type: train-ppo\n    prompts: PROMPTS\n    out: somewhere\n", 4, ["set by the runner"]),
    # a reference to a later stage (line 4) and to a missing variable (line 3)
    ("stages:\n  - type: score\n    scorer: length\n    input: ${stages.gen.out}\n  - name: gen\n    type: generate\n"
     "    prompts: PROMPTS\n", 4, ["later stage"]),
    ("stages:\n  - type: generate\n    model: ${vars.nope}\n    prompts: PROMPTS\n", 3, ["no variable 'nope'"]),
    # an unknown top-level key
    ("name: x\nstage:\n  - type: generate\n", 2, ["stage", "did you mean stages"]),
    # an output a stage type does not have
    ("stages:\n  - name: gen\n    type: generate\n    prompts: PROMPTS\n  - type: score\n    scorer: length\n"
     "    input: ${stages.gen.policy}\n", 7, ["outputs out, dir"]),
])
def test_recipe_errors_name_file_line_and_field(tmp_path, body, line, words):
    path = _recipe(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("body, line, words", [
    # a bad value, checked by the stage's own config dataclass: line 5 is `k: 0`
    ("stages:\n  - type: generate\n    model: tiny-random\n    prompts: PROMPTS\n    k: 0\n", 5, ["k", "positive"]),
    # an input file that does not exist: line 4
    ("stages:\n  - type: generate\n    model: tiny-random\n    prompts: /no/such/prompts.jsonl\n", 4,
     ["/no/such/prompts.jsonl", "not found"]),
    # a PPO setting its config rejects (minibatch 3 does not divide batch 8): line 5
    ("stages:\n  - type: train-ppo\n    prompts: PROMPTS\n    batch_size: 8\n    minibatch_size: 3\n", 5,
     ["minibatch_size", "does not divide"]),
    # an engine setting without `engine: ray`: line 5 is `workers: 2`; an unknown engine: line 4
    ("stages:\n  - type: score\n    input: PROMPTS\n    scorer: length\n    workers: 2\n", 5,
     ["score.workers", "engine: ray"]),
    ("stages:\n  - type: score\n    input: PROMPTS\n    engine: spark\n    scorer: length\n", 4,
     ["score.engine", "local, ray"]),
])
def test_setting_values_are_checked_before_anything_runs(tmp_path, body, line, words):
    path = _recipe(tmp_path, body)
    rec = load_recipe(path)
    with pytest.raises(ConfigError) as e:
        plan(rec, tmp_path / "run")
    assert str(e.value).startswith(f"{path}:{line}: "), str(e.value)
    assert all(w in str(e.value) for w in words)
    assert not (tmp_path / "run").exists()


def test_cli_reports_a_bad_recipe_in_one_line(tmp_path, capsys):
    path = _recipe(tmp_path, "stages:\n  - type: generate\n    model: tiny-random\n    prompts: PROMPTS\n    kk: 2\n")
    assert run_cli(["run", path, "--out", tmp_path / "run"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and f"{path}:5: " in err and "kk" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_scales_and_vars(tmp_path):
    body = SMALL + "scales:\n  tiny:\n    tokens: 2\n"
    path = _recipe(tmp_path, body)
    assert load_recipe(path).vars["tokens"] == 4
    assert load_recipe(path, scale="tiny").vars["tokens"] == 2
    assert load_recipe(path, var_overrides={"tokens": "3"}).vars["tokens"] == 3  # parsed as YAML: an int
    with pytest.raises(ConfigError, match="not a scale"):
        load_recipe(path, scale="huge")
    with pytest.raises(ConfigError, match="not a variable"):
        load_recipe(path, var_overrides={"tokenz": "3"})
    bad = _recipe(tmp_path, SMALL + "scales:\n  tiny:\n    tokenz: 2\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: scales.tiny.tokenz"):
        load_recipe(bad, scale="tiny")


@pytest.mark.parametrize("name", ["flr-dpo", "fine-grained-ppo"])
@pytest.mark.parametrize("scale", ["tiny", "default", "full"])
def test_shipped_recipes_check_at_every_scale(tmp_path, name, scale):
    rec = load_recipe(name, scale=scale)
    stages = plan(rec, tmp_path / "run")
    types = {p.type.name for p in stages}
    assert "eval-winrate" in types and "report" in types
    # the repository's recipes/ folder is the package's copy
    assert (REPO / "recipes" / f"{name}.yaml").read_text() == rec.path.read_text()


# ---------------------------------------------------------------------------------------------- selection


def test_select_only_from_skip():
    names = ["a", "b", "c", "d"]
    assert select(names) == names
    assert select(names, only=["c", "a"]) == ["a", "c"]  # recipe order, whatever the order given
    assert select(names, only=["a,c"]) == ["a", "c"]
    assert select(names, start="b") == ["b", "c", "d"]
    assert select(names, start="b", skip=["c"]) == ["b", "d"]
    assert select(names, skip=["a", "d"]) == ["b", "c"]
    with pytest.raises(ConfigError, match="no stage named 'x'"):
        select(names, only=["x"])
    with pytest.raises(ConfigError, match="not both"):
        select(names, only=["a"], start="b")


# ---------------------------------------------------------------------------------------------- running


def _log():
    lines: list[str] = []
    return lines, lines.append


def test_resume_skips_done_stages_and_reruns_after_a_change(tmp_path):
    path = _recipe(tmp_path, SMALL)
    run = tmp_path / "run"
    lines, log = _log()
    # a stage whose input stage has not run cannot run alone
    with pytest.raises(FinealignError, match="needs the output of stage gen"):
        run_recipe(load_recipe(path), run, only=["scored"], log=log)
    out = run_recipe(load_recipe(path), run, log=log)
    assert [o.status for o in out] == ["ran", "ran"]
    scored = run / "scored" / "scored.jsonl"
    rows = [json.loads(x) for x in scored.read_text().splitlines()]
    assert len(rows) == 2 and all(r["score"] == len(r["completion"]) or "score" in r for r in rows)
    marker = json.loads((run / "gen" / MARKER).read_text())
    assert marker["settings"]["max_new_tokens"] == 4 and marker["type"] == "generate"
    mtime = scored.stat().st_mtime_ns

    # the same recipe again: both skipped, nothing rewritten
    out = run_recipe(load_recipe(path), run, log=log)
    assert [o.status for o in out] == ["skipped", "skipped"] and scored.stat().st_mtime_ns == mtime
    # a setting that only changes speed does not rerun anything
    out = run_recipe(load_recipe(_recipe(tmp_path, SMALL + "    chunk: 1\n", "r2.yaml")), run, log=log)
    assert [o.status for o in out] == ["skipped", "skipped"]
    # a changed setting reruns that stage and the stage that reads its output
    lines.clear()
    out = run_recipe(load_recipe(path, var_overrides={"tokens": "6"}), run, log=log)
    assert [o.status for o in out] == ["ran", "ran"]
    assert any("settings changed" in m and "max_new_tokens: 4 -> 6" in m for m in lines)
    assert any("scored" in m and "input stage" in m for m in lines)
    assert json.loads((run / "gen" / MARKER).read_text())["settings"]["max_new_tokens"] == 6
    # --only a stage whose input is done with these settings: runs alone
    (run / "scored" / MARKER).unlink()
    out = run_recipe(load_recipe(path, var_overrides={"tokens": "6"}), run, only=["scored"], log=log)
    assert [(o.name, o.status) for o in out] == [("scored", "ran")]
    # ... but not when its input was made with other settings
    with pytest.raises(FinealignError, match="gen .*other settings"):
        run_recipe(load_recipe(path, var_overrides={"tokens": "5"}), run, only=["scored"], log=log)


def test_partial_output_made_with_other_settings_is_cleared(tmp_path):
    path = _recipe(tmp_path, SMALL)
    run = tmp_path / "run"
    (run / "gen").mkdir(parents=True)
    (run / "gen" / ".finealign-started.json").write_text(json.dumps({"fingerprint": "something else"}))
    (run / "gen" / "responses.jsonl").write_text('{"stale": true}\n')
    lines, log = _log()
    run_recipe(load_recipe(path), run, only=["gen"], log=log)
    rows = [json.loads(x) for x in (run / "gen" / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and not any("stale" in r for r in rows)
    assert any("rerunning from scratch" in m for m in lines)


def test_run_and_report_end_to_end_tiny(tmp_path, capsys):
    run = tmp_path / "fg"
    assert run_cli(["run", "fine-grained-ppo", "--scale", "tiny", "--out", run, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "stages ran: 10" in printed and "report:" in printed
    rec = load_recipe("fine-grained-ppo", scale="tiny")
    for s in rec.stages:  # every stage finished and left its output
        assert (run / s.name / MARKER).is_file(), s.name
    assert (run / "generate" / "responses.jsonl").stat().st_size > 0
    assert (run / "edit" / "edits.jsonl").exists()
    assert (run / "token-rm" / "eval.json").exists() or any((run / "token-rm").glob("*.safetensors"))
    assert (run / "ppo-token" / "policy").is_dir() and (run / "ppo-sequence" / "policy").is_dir()
    assert json.loads((run / "winrate-token" / "results.json").read_text())["n"] == 4
    # a second run skips everything
    assert run_cli(["run", "fine-grained-ppo", "--scale", "tiny", "--out", run, "--quiet"]) == 0
    assert "stages ran: 0  skipped (done before): 10" in capsys.readouterr().out

    html_path = tmp_path / "report.html"
    assert run_cli(["report", run, "--out", html_path]) == 0
    page = html_path.read_text()
    for section in ("summary", "winrates", "judge", "rewards", "curves", "heatmap", "samples", "stages"):
        assert f"id='{section}'" in page, section
    assert len(re.findall(r"src='data:image/png;base64,[A-Za-z0-9+/=]{200,}'", page)) >= 4  # bars, accuracy, curves
    assert "srcdoc=" in page and "per-token rewards" in page  # the heatmap, inline
    assert not re.search(r"https?://", page)  # nothing loaded from the network
    assert "winrate-token" in page and "rm-check" in page and "before: initial policy" in page
