"""Every verb of the verb table is the same verb on the command line and in a recipe.

For each row of ``finealign.verbs``: the command at the row's words is generated from the row's settings
dataclass; every setting the command shows is a key of the row's recipe stage (or set by the runner, with
its reason), with the same check (the same ``ConfigError`` for a bad value); every recipe key is a flag of the
command, or listed below with a reason. No command runs and no model loads.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import typer

from finealign.cli.main import app
from finealign.config import build_config
from finealign.errors import ConfigError
from finealign.pipeline.recipe import load_recipe
from finealign.pipeline.runner import plan, stage_paths
from finealign.pipeline.stages import STAGE_TYPES
from finealign.verbs import verbs

ROWS = list(verbs().values())

# recipe keys that are not flags of the verb's command, and why
RECIPE_ONLY = {
    ("generate", "limit"): "a recipe's scale knob (the first N prompts); on the command line give a shorter file",
    ("eval-winrate", "limit"): "a recipe's scale knob (the first N prompts); on the command line give a shorter file",
}


def _command(words: tuple[str, ...]):
    cmd = typer.main.get_command(app)
    for w in words:
        cmd = cmd.commands[w]
    return cmd


def _cli_settings(cls, fixed: dict) -> list[str]:
    """The settings the command takes: its flags and arguments, and its ``cli=False`` fields, which its
    ``--config`` YAML sets (``trl:``)."""
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name not in fixed]


def test_the_table_has_a_row_per_stage_type_and_command():
    assert {r.name for r in ROWS} == set(STAGE_TYPES)
    assert {"generate", "score", "label", "edit", "train-dpo", "train-kto", "train-followup-sft", "train-token-rm",
            "train-ppo", "eval-rm", "eval-winrate", "report"} <= {r.name for r in ROWS}
    assert {r.name for r in ROWS if r.shards} == {"generate", "score", "label", "eval-rm"}


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_the_command_and_the_stage_take_the_rows_settings(row):
    cmd = _command(row.command)
    assert cmd.callback.config_class is row.settings, f"{' '.join(row.command)} is not generated from the row"
    assert getattr(cmd.callback, "verb", None) == row.name, f"{' '.join(row.command)} is not registered from its row"
    assert cmd.help.split() == (row.help or (row.settings.__doc__ or "").strip().split("\n\n")[0]).split()
    typ = STAGE_TYPES[row.name]
    assert typ.config is row.settings and typ.extras is row.stage_extras and typ.outputs == row.outputs


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_every_cli_setting_is_a_recipe_key_and_back(row):
    keys = set(STAGE_TYPES[row.name].setting_names())
    cli = set(_cli_settings(row.settings, row.fixed))
    missing = sorted(k for k in cli - keys if not row.owned.get(k))
    assert not missing, f"{row.name}: command settings a recipe cannot set: {missing}"
    extra = sorted(k for k in keys - cli if (row.name, k) not in RECIPE_ONLY)
    assert not extra, f"{row.name}: recipe keys that are not flags of `finealign {' '.join(row.command)}`: {extra}"
    for k in cli & set(row.owned):
        assert row.owned[k].strip(), f"{row.name}.{k}: owned by the runner without a reason"


def _candidates(hint) -> list:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and typing.get_origin(hint) is not list else hint
    return {int: [-1, 0, 1, 7, 10**6], float: [-1.0, 0.0, 0.5, 1.5, 1e6],
            str: ["", "no-such-value", "float64"], bool: ["maybe"]}.get(base, [])


def _outcome(make, key):
    """The ``(field, problem)`` of the ConfigError ``make()`` raises for ``key``; None when it raises none for it."""
    try:
        make()
    except ConfigError as e:
        field = e.field.rpartition(".")[2]
        return (field, e.problem) if field == key else None
    except Exception:  # another field's problem, or a check outside the settings: not this key's
        return None
    return None


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_a_bad_value_gets_the_same_error_on_the_command_line_and_in_a_recipe(row, tmp_path):
    typ = STAGE_TYPES[row.name]
    outputs = stage_paths(typ, tmp_path / "run" / "stage")
    hints = typing.get_type_hints(row.settings)
    names = {f.name for f in dataclasses.fields(row.settings)}
    # the command line gets the values the runner gives a stage (its output path), so both fail on the same field
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in row.owned_values(outputs).items() if k in names}
    checked = 0
    for key in set(_cli_settings(row.settings, row.fixed)) & set(typ.setting_names()):
        for bad in _candidates(hints.get(key)):
            cli = _outcome(lambda: build_config(row.settings, **{**given, key: bad}, **row.fixed), key)
            stage = _outcome(lambda: typ.build({key: bad}, outputs), key)
            assert cli == stage, f"{row.name}.{key}={bad!r}: command line {cli}, recipe {stage}"
            checked += cli is not None
    assert checked, f"{row.name}: no bad value probed any check"


def _plan_one(tmp_path, stage: str) -> list:
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "hi"}\n', encoding="utf-8")
    stage = stage.replace("p.jsonl", str(tmp_path / "p.jsonl"))
    (tmp_path / "r.yaml").write_text(f"name: t\nstages:\n{stage}", encoding="utf-8")
    return plan(load_recipe(str(tmp_path / "r.yaml")), tmp_path / "run")


def test_the_drifts_named_by_issue_25_are_gone(tmp_path):
    # a recipe sets score's max_chars / max_length and generate's backend, as the command line does
    (ps,) = _plan_one(tmp_path, "  - type: score\n    input: p.jsonl\n    scorer: length\n    max_chars: 50\n"
                                "    max_length: 64\n")
    assert (ps.cfg.max_chars, ps.cfg.scorer_spec()) == (50, "length,max_length=64")
    (ps,) = _plan_one(tmp_path, "  - type: generate\n    prompts: p.jsonl\n    backend: vllm\n")
    assert ps.cfg.backend == "vllm"
    # an edit ratio above 1 (insertions count) is a valid guard in both
    (ps,) = _plan_one(tmp_path, "  - type: edit\n    input: p.jsonl\n    max_ratio: 1.5\n")
    assert ps.cfg.max_ratio == 1.5
    assert build_config(row_settings("edit"), input="p.jsonl", out="o.jsonl", max_ratio=1.5).max_ratio == 1.5
    with pytest.raises(ConfigError, match="max_ratio"):
        _plan_one(tmp_path, "  - type: edit\n    input: p.jsonl\n    max_ratio: 0\n")


def row_settings(name: str) -> type:
    return verbs()[name].settings
