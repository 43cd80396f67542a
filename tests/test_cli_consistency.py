"""Every verb on the one config mechanism: the same idea has the same flag everywhere.

Walks every registered command of the typer app (no command runs).
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
import typer

from finealign.cli.main import app
from finealign.errors import ConfigError


def _commands():
    def walk(cmd, path):
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, path + [name])
        else:
            yield " ".join(path), cmd

    return list(walk(typer.main.get_command(app), []))


COMMANDS = _commands()


def _visible(cmd) -> set[str]:
    return {o for p in cmd.params if not getattr(p, "hidden", False) for o in (*p.opts, *p.secondary_opts)}


def test_the_walk_finds_the_verbs():
    names = {n for n, _ in COMMANDS}
    assert {"generate", "score", "label", "edit", "serve", "train token-rm", "train ppo", "train dpo", "env",
            "data stats", "models pull"} <= names


@pytest.mark.parametrize("name,cmd", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_has_config_and_quiet_and_no_old_spellings(name, cmd):
    flags = _visible(cmd)
    assert "--config" in flags and "--quiet" in flags, f"{name}: {sorted(flags)}"
    assert not flags & {"--max-steps", "--no-progress", "--output", "--out-dir"}, name
    assert getattr(cmd.callback, "config_class", None) is not None, f"{name}: not generated from a config dataclass"


def _dummy(f, hint):
    """A placeholder value of a required field's type (a required field only needs to be set)."""
    if (f.metadata or {}).get("choices"):
        return f.metadata["choices"][0]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    hint = args[0] if args and typing.get_origin(hint) is not list else hint
    if typing.get_origin(hint) is list:
        return ["x"]
    return {int: 1, float: 1.0, bool: True}.get(hint, "x")


# settings a verb needs together beyond its required fields (cross-field checks)
EXTRA = {"eval winrate": {"model": "m", "prompts": "p.jsonl", "reference_outputs": "r.jsonl"}}


def _build_with_dtype(name, cls, value):
    hints = typing.get_type_hints(cls)
    req = {f.name: _dummy(f, hints[f.name]) for f in dataclasses.fields(cls)
           if (f.metadata or {}).get("required") and f.name != "dtype"}
    return cls(dtype=value, **req, **EXTRA.get(name, {}))


DTYPE_COMMANDS = [(n, c) for n, c in COMMANDS if "--dtype" in _visible(c)]


def test_some_commands_have_dtype():
    assert len(DTYPE_COMMANDS) >= 5, [n for n, _ in DTYPE_COMMANDS]


@pytest.mark.parametrize("name,cmd", DTYPE_COMMANDS, ids=[n for n, _ in DTYPE_COMMANDS])
def test_every_dtype_accepts_bf16_and_bfloat16(name, cmd):
    cls = cmd.callback.config_class
    for spelling in ("bf16", "bfloat16", "fp32", "float32"):
        assert _build_with_dtype(name, cls, spelling).dtype in ("bfloat16", "float32"), (name, spelling)
    with pytest.raises(ConfigError) as e:
        _build_with_dtype(name, cls, "int8")
    assert e.value.field == "dtype"


def _parse(path: str, argv: list) -> tuple:
    """(config, deprecation messages) of ``finealign PATH ARGV``, parsed and validated, not run."""
    from finealign.cli.options import config_from_cli, config_parameters

    cmd = dict(COMMANDS)[path]
    params = dict(cmd.make_context(path, [str(a) for a in argv]).params)
    params.pop("quiet", None), params.pop("deprecated__no_progress", None)
    cls = cmd.callback.config_class
    seen: list[str] = []
    return config_from_cli(cls, params, config_parameters(cls)[1], seen.append), seen


@pytest.mark.parametrize("path,argv,field,value,message", [
    ("label", ["i.jsonl", "o.jsonl", "--scorer", "length", "--standard"], "conversational", False,
     "--standard is deprecated and will be removed in the next release; use --no-conversational"),
    ("quickstart", ["--out-dir", "qs"], "out", "qs", "--out-dir is deprecated"),
    ("eval token-rm", ["rm", "--data", "d.jsonl", "--output", "m.json"], "out", "m.json", "--output is deprecated"),
    ("train ppo", ["--policy", "tiny-random", "--prompts", "p.jsonl", "--out", "o"], "model", "tiny-random",
     "--policy is deprecated and will be removed in the next release; use --model"),
    ("sim make", ["facts", "--policy", "tiny-random", "--out", "o"], "model", "tiny-random", "use --model"),
    ("train followup-sft", ["--data", "d", "--out", "o", "--max-steps", "3"], "steps", 3, "use --steps"),
    ("train kto", ["--data", "d", "--out", "o", "--full", "--learning-rate", "0.5"], "lora", False, "use --no-lora"),
])
def test_old_spellings_parse_to_the_new_field_with_a_message(path, argv, field, value, message):
    cfg, seen = _parse(path, argv)
    assert getattr(cfg, field) == value and any(message in m for m in seen), seen


def test_new_spellings_and_yaml_give_the_same_config(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 3\nlora: false\nlearning_rate: 0.5\n")
    a, _ = _parse("train followup-sft", ["--data", "d", "--out", "o", "--steps", "3", "--no-lora", "--lr", "0.5"])
    b, _ = _parse("train followup-sft", ["--data", "d", "--out", "o", "--config", y])
    assert a == b and (a.steps, a.lora, a.learning_rate) == (3, False, 0.5)
    e = tmp_path / "e.yaml"
    e.write_text("concurrency: 7\n")
    assert _parse("edit", ["i.jsonl", "o.jsonl", "-c", e])[0].concurrency == 7  # -c is --config on every verb
