"""Names a newcomer can guess: ``--version``, one spelling per command (old ones kept with a deprecation line),
a mistyped command suggests the right one, and Ctrl-C says where a rerun resumes from."""

from __future__ import annotations

import json

import pytest

import finealign
from conftest import run_cli
from finealign.cli.vocabulary import RENAMED_COMMANDS, command_paths, suggest


def test_version(capsys):
    assert run_cli(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"finealign {finealign.__version__}"


@pytest.mark.parametrize("old", sorted(RENAMED_COMMANDS))
def test_renamed_command_still_works_with_one_deprecation_line(old, capsys):
    new = RENAMED_COMMANDS[old]
    assert run_cli([old, "--help"]) == 0
    out, err = capsys.readouterr()
    assert "Usage: " in out and " ".join(new) in out  # the new command's help
    lines = [x for x in err.splitlines() if "deprecated" in x]
    assert len(lines) == 1 and f"use `finealign {' '.join(new)}`" in lines[0]
    assert run_cli([*new, "--help"]) == 0
    assert "deprecated" not in capsys.readouterr().err


def test_renamed_command_parses_the_same_as_the_new_one(tmp_path, capsys):
    args = ["--scorer", "length,foo=1", "--benchmark", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]
    assert run_cli(["eval", "rm", *args]) == 1
    new_err = capsys.readouterr().err
    assert run_cli(["eval-rm", *args]) == 1
    old_err = capsys.readouterr().err
    assert [x for x in old_err.splitlines() if "deprecated" not in x] == new_err.splitlines()


@pytest.mark.parametrize("argv, bad, want", [
    (["eval-winrate"], "eval-winrate", "eval winrate"),
    (["eval_winrate", "--help"], "eval_winrate", "eval winrate"),
    (["winrate"], "winrate", "eval winrate"),
    (["trian", "dpo"], "trian", "train"),
    (["train", "dpoo"], "dpoo", "train dpo"),
    (["gnerate"], "gnerate", "generate"),
])
def test_mistyped_command_suggests_the_right_one(argv, bad, want, capsys):
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: no such command {bad!r}; did you mean `finealign {want}`?"


def test_every_suggestion_is_a_real_command():
    import typer

    from finealign.cli.main import app

    paths = command_paths(typer.main.get_command(app))
    names = {" ".join(p) for p in paths}
    for p in paths:  # each command spelled with dashes, or missing a letter, finds itself
        joined = "-".join(p)
        assert suggest([], joined, paths) == " ".join(p)
        assert suggest(list(p[:-1]), p[-1][:-1] + "x" if len(p[-1]) > 4 else p[-1], paths) in names


def test_unrelated_word_is_left_to_the_usage_error(capsys):
    assert run_cli(["qqqqzzzz"]) == 2
    assert "did you mean `finealign" not in capsys.readouterr().err


def test_interrupt_of_a_resumable_verb_says_where_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    import finealign.generation as generation

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(generation, "generate_file", interrupted)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi"}) + "\n")
    out = tmp_path / "responses.jsonl"
    assert run_cli(["generate", "--model", "tiny-random", "--prompts", prompts, "--out", out, "-q"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"interrupted; rerun the same command to resume from {out}"


def test_interrupt_of_a_verb_that_does_not_resume_says_so(tmp_path, monkeypatch, capsys):
    import finealign.report.build as build

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "build_report", interrupted)
    assert run_cli(["report", tmp_path, "--out", tmp_path / "r.html"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"


def test_run_without_out_names_its_default_folder(tmp_path, monkeypatch, capsys):
    import finealign.pipeline.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_recipe", interrupted)
    monkeypatch.chdir(tmp_path)
    assert run_cli(["run", "flr-dpo", "--scale", "tiny", "-q"]) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "interrupted; rerun the same command to resume from runs/flr-dpo-tiny"


def test_recipe_key_policy_is_read_as_model_with_a_deprecation_line(tmp_path):
    from finealign.errors import ConfigError
    from finealign.pipeline.recipe import load_recipe

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi"}) + "\n")
    body = f"name: r\nstages:\n  - name: ppo\n    type: train-ppo\n    prompts: {prompts}\n    policy: tiny-random\n"
    (tmp_path / "r.yaml").write_text(body)
    with pytest.warns(FutureWarning, match=r"r\.yaml:6: ppo\.policy is deprecated .*; use model"):
        rec = load_recipe(tmp_path / "r.yaml")
    assert rec.stages[0].settings["model"] == "tiny-random" and "policy" not in rec.stages[0].settings
    (tmp_path / "both.yaml").write_text(body + "    model: tiny-random\n")
    with pytest.raises(ConfigError, match=r"both\.yaml:6: ppo\.policy: give model only"):
        load_recipe(tmp_path / "both.yaml")
