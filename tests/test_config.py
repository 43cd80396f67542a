"""The one config mechanism: dataclass -> CLI flags + YAML overlay, one validation style."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from finealign.cli.options import command_from_config
from finealign.config import ModelArgs, RunArgs, build_config, normalize_dtype, positive, setting
from finealign.errors import ConfigError


@dataclass(kw_only=True)
class Demo(ModelArgs, RunArgs):
    """A demo verb."""

    steps: int = setting(10, help="Steps.", deprecated=("--max-steps",), check=positive)
    data: list[str] = setting(default_factory=list, help="Data files, repeatable.")
    learning_rate: float = setting(1e-4, flag="--lr", help="Learning rate.")
    loss: str = setting("a", choices=("a", "b"), help="Loss.")
    name: str = setting(None, positional=True, help="A name.")


def _app(seen: list):
    app = typer.Typer()

    @app.callback()
    def _cb():
        pass

    command_from_config(app, "demo", Demo, lambda cfg, quiet=False: seen.append((cfg, quiet)))
    return app


def test_precedence_defaults_yaml_flags(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 3\nlearning_rate: 0.5\nout: from-yaml\n")
    cfg = build_config(Demo, y, steps=7)
    assert cfg.steps == 7  # flag beats YAML
    assert cfg.learning_rate == 0.5  # YAML beats default
    assert cfg.out == "from-yaml" and cfg.dtype == "float32"  # default


def test_unknown_yaml_field_names_file_line_and_suggests(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("out: o\nsteps: 3\nstepz: 4\n")
    with pytest.raises(ConfigError) as e:
        build_config(Demo, y)
    assert str(e.value) == f"{y}:3: stepz: not a setting of Demo; did you mean steps?"


def test_invalid_yaml_value_names_its_line(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("out: o\n\nsteps: 0\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: steps: must be positive, got 0"):
        build_config(Demo, y)
    y.write_text("out: o\nsteps: many\n")
    with pytest.raises(ConfigError, match=r":2: steps: expected int, got 'many'"):
        build_config(Demo, y)


def test_validation_choices_required_and_dtype_vocabulary():
    with pytest.raises(ConfigError, match="loss: 'c' is not one of a, b"):
        Demo(out="o", loss="c")
    with pytest.raises(ConfigError, match="out: required"):
        Demo()
    assert [normalize_dtype(x) for x in ("fp32", "bf16", "fp16", "bfloat16")] == [
        "float32", "bfloat16", "float16", "bfloat16"]
    with pytest.raises(ConfigError, match="dtype"):
        Demo(out="o", dtype="int8")


def test_cli_generated_flags_deprecations_and_quiet(tmp_path):
    seen = []
    r = CliRunner()
    res = r.invoke(_app(seen), ["demo", "nm", "--out", "o", "--max-steps", "5", "--data", "a", "--data", "b",
                                "--dtype", "bf16", "--lr", "0.25", "--no-progress"])
    assert res.exit_code == 0, res.output
    cfg, quiet = seen[-1]
    assert (cfg.steps, cfg.data, cfg.dtype, cfg.learning_rate, cfg.name, quiet) == (
        5, ["a", "b"], "bfloat16", 0.25, "nm", True)
    assert "--max-steps is deprecated" in res.output and "--no-progress is deprecated" in res.output
    res = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"}).invoke(_app(seen), ["demo", "--help"])
    assert "Data files, repeatable." in res.output and "--config" in res.output and "--quiet" in res.output
    assert "--max-steps" not in res.output  # deprecated spellings are hidden


def test_cli_yaml_overlay_and_errors(tmp_path):
    seen = []
    y = tmp_path / "c.yaml"
    y.write_text("out: o\nsteps: 9\nloss: b\n")
    r = CliRunner()
    res = r.invoke(_app(seen), ["demo", "--config", str(y), "--steps", "2"])
    assert res.exit_code == 0 and (seen[-1][0].steps, seen[-1][0].loss) == (2, "b")
    res = r.invoke(_app(seen), ["demo", "--out", "o", "--steps", "-1"])
    assert isinstance(res.exception, ConfigError) and "steps: must be positive" in str(res.exception)


def test_fingerprint_changes_with_settings():
    a, b = Demo(out="o"), Demo(out="o", steps=11)
    assert a.fingerprint() != b.fingerprint()
    assert Demo(out="x").fingerprint(exclude=("out",)) == a.fingerprint(exclude=("out",))


def test_every_cli_verb_error_is_one_line(tmp_path, capsys):
    from conftest import run_cli

    code = run_cli(["train", "ppo", "--prompts", "p.jsonl", "--out", tmp_path / "x", "--granularity", "word"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == "error: granularity: 'word' is not one of token, sequence"


def test_deprecated_key_in_constructor_yaml_and_overrides(tmp_path):
    with pytest.warns(FutureWarning, match="max_steps is deprecated .* use steps"):
        assert Demo(out="o", max_steps=4).steps == 4  # renamed_fields: --max-steps -> max_steps
    y = tmp_path / "c.yaml"
    y.write_text("out: o\nmax_steps: 5\n")
    seen = []
    assert build_config(Demo, y, warn=seen.append).steps == 5 and f"{y}:2: max_steps is deprecated" in seen[0]
    y.write_text("out: o\nmax_steps: 5\nsteps: 6\n")
    with pytest.raises(ConfigError, match="give steps only"):
        build_config(Demo, y, warn=seen.append)


def test_help_shows_defaults_and_brackets():
    res = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"}).invoke(_app([]), ["demo", "--help"])
    assert "[default: 10]" in res.output and "[required]" not in res.output.split("--steps")[1].split("\n")[0]


def test_mixed_precision_auto_resolves_by_hardware(tmp_path, monkeypatch):
    """``auto`` -> bf16 only where it was measured faster (AMX-BF16 CPUs, CUDA with bf16), else no; explicit
    values pass through; the trainers' configs hold the resolved value (so a run's fingerprint names it)."""
    import finealign.config as C
    from finealign.train.ppo_config import PPOConfig
    from finealign.train.token_rm_config import TokenRMConfig

    amx, plain = tmp_path / "amx", tmp_path / "plain"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n")
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert {"amx_bf16", "avx512f"} <= C.cpu_flags(str(amx)) and "amx_bf16" not in C.cpu_flags(str(plain))
    assert C.cpu_flags(str(tmp_path / "missing")) == set()
    read_flags = C.cpu_flags
    for path, want in ((amx, "bf16"), (plain, "no")):
        monkeypatch.setattr(C, "cpu_flags", lambda _path="/proc/cpuinfo", f=read_flags, p=str(path): f(p))
        assert C.resolve_mixed_precision("auto", "cpu") == want
        assert PPOConfig(device="cpu", prompts="p.jsonl", out="o").mixed_precision == want  # the default is auto
        assert TokenRMConfig(device="cpu", data=["e.jsonl"], out="o").mixed_precision == want
        for explicit in ("no", "bf16"):
            assert C.resolve_mixed_precision(explicit, "cpu") == explicit
            assert PPOConfig(device="cpu", prompts="p.jsonl", out="o", mixed_precision=explicit).mixed_precision == explicit
