"""`finealign train dpo|kto`: thin TRL wrappers; YAML overlay precedence; parameters change; bad input."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from finealign.config import build_config
from finealign.errors import ConfigError, DataError, FinealignError
from finealign.train.preference import PrefTrainConfig, read_pref_dataset

WORDS = ["the sea", "France", "a fox", "poems"]


def _pairs(path):
    rows = [{"prompt": f"Tell me about {w}.", "chosen": f"{w} is worth a look.", "rejected": "No."} for w in WORDS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _kto(path):
    rows = [{"prompt": f"Tell me about {w}.", "completion": c, "label": lab}
            for w in WORDS for c, lab in ((f"{w} is worth a look.", True), ("No.", False))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_overlay_precedence(tmp_path):
    y = tmp_path / "r.yaml"
    y.write_text("beta: 0.3\nlearning_rate: 1.0e-4\nlora: true\ntrl: {loss_type: [ipo]}\n")
    cfg = build_config(PrefTrainConfig, y, data=tmp_path / "d.jsonl", out=tmp_path / "o", beta=0.05, steps=None)
    assert cfg.beta == 0.05  # flag beats YAML
    assert cfg.learning_rate == 1e-4 and cfg.lora is True  # YAML beats defaults
    assert cfg.steps == -1 and cfg.trl == {"loss_type": ["ipo"]}  # default kept when the flag is absent
    y.write_text("betta: 1\n")
    with pytest.raises(ConfigError, match="r.yaml:1: betta: not a setting of PrefTrainConfig; did you mean beta"):
        build_config(PrefTrainConfig, y, data="d", out="o")
    with pytest.raises(FinealignError):
        PrefTrainConfig(method="dpo", data="d", out="o", beta=0)
    with pytest.raises(FinealignError):
        PrefTrainConfig(method="ppo", data="d", out="o")
    with pytest.raises(ConfigError, match="trl: must be a mapping"):
        PrefTrainConfig(data="d", out="o", trl="loss_type=ipo")


def test_dataset_conversion_and_errors(tmp_path):
    ds = read_pref_dataset(_pairs(tmp_path / "p.jsonl"), "dpo")
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert ds[0]["prompt"] == [{"role": "user", "content": "Tell me about the sea."}]
    assert ds[0]["rejected"] == [{"role": "assistant", "content": "No."}]
    only_good = tmp_path / "k.jsonl"
    only_good.write_text(json.dumps({"prompt": "q", "completion": "a", "label": True}) + "\n")
    with pytest.raises(DataError, match="desirable and undesirable"):
        read_pref_dataset(only_good, "kto")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1: rejected"):
        read_pref_dataset(bad, "dpo")


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_cli_trains_tiny_model_and_changes_parameters(tmp_path, method):
    from finealign.models import load_model

    data = _pairs(tmp_path / "d.jsonl") if method == "dpo" else _kto(tmp_path / "d.jsonl")
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 1.0e-2\nsteps: 2\nbatch_size: 2\nmax_length: 128\nlogging_steps: 1\n")
    assert run_cli(["train", method, "--model", "tiny-random", "--data", data, "--out", out, "--config", recipe]) == 0
    meta = json.loads((out / "finealign_train.json").read_text())
    assert meta["steps"] == 2 and meta["trainer"] == method and meta["config"]["learning_rate"] == 1e-2
    base, _ = load_model("tiny-random")
    trained, _ = load_model(str(out))
    b, t = dict(base.named_parameters()), dict(trained.named_parameters())
    assert any(not torch.equal(b[n], t[n]) for n in b), "no parameter changed"


def test_cli_lora_saves_adapter(tmp_path):
    out = tmp_path / "lora"
    assert run_cli(["train", "dpo", "--model", "tiny-random", "--data", _pairs(tmp_path / "d.jsonl"), "--out", out,
                    "--lora", "--steps", "1", "--batch-size", "2", "--max-length", "128", "--lr", "1e-2"]) == 0
    assert (out / "adapter_config.json").exists() and (out / "finealign_train.json").exists()


def test_cli_bad_input(tmp_path):
    assert run_cli(["train", "dpo", "--model", "tiny-random", "--out", tmp_path / "o"]) == 1  # no data
    assert run_cli(["train", "kto", "--model", "tiny-random", "--data", _pairs(tmp_path / "d.jsonl"),
                    "--out", tmp_path / "o"]) == 1  # pairs given to KTO
    assert not (tmp_path / "o" / "finealign_train.json").exists()


def test_old_flag_spellings_still_work_with_a_deprecation_message(tmp_path, capsys):
    """--max-steps, --full, --learning-rate and the YAML key max_steps are the previous release's spellings."""
    out = tmp_path / "o"
    assert run_cli(["train", "dpo", "--model", "tiny-random", "--data", _pairs(tmp_path / "d.jsonl"), "--out", out,
                    "--max-steps", "1", "--full", "--learning-rate", "1e-2", "--batch-size", "2",
                    "--max-length", "128"]) == 0
    err = capsys.readouterr().err
    for old, new in (("--max-steps", "--steps"), ("--full", "--no-lora"), ("--learning-rate", "--lr")):
        assert f"{old} is deprecated" in err and f"use {new}" in err
    meta = json.loads((out / "finealign_train.json").read_text())
    assert meta["steps"] == 1 and meta["config"]["lora"] is False and meta["config"]["learning_rate"] == 1e-2
    y = tmp_path / "old.yaml"
    y.write_text("max_steps: 3\n")
    seen = []
    assert build_config(PrefTrainConfig, y, warn=seen.append, data="d", out="o").steps == 3
    assert "old.yaml:1: max_steps is deprecated" in seen[0]


def test_yaml_method_must_fit_the_command(tmp_path, capsys):
    y = tmp_path / "r.yaml"
    y.write_text("beta: 0.2\nmethod: kto\n")
    assert run_cli(["train", "dpo", "--data", "d", "--out", tmp_path / "o", "--config", y]) == 1
    assert f"{y}:2: method: 'kto' given to a command that sets 'dpo'" in capsys.readouterr().err
