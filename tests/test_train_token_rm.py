"""`finealign train token-rm` and `finealign eval-token-rm` end to end on the tiny random model."""

import json

import pytest
import torch

from conftest import run_cli
from finealign.data.io import write_jsonl

PAIRS = [
    ("What is the capital of France?", "The capital of France is Lyon.", "The capital of France is Paris."),
    ("Summarize: the cat sat on the mat.", "A dog sat on the mat.", "A cat sat on the mat."),
    ("Write a short poem about the sea.", "The sea is green and loud.", "The sea is blue and calm."),
    ("Could you explain it again?", "It is wrong because of facts.", "It is right because of the facts."),
    ("What is 2 + 2?", "2 + 2 = 5.", "2 + 2 = 4."),
    ("Name a colour.", "Blue, I think, maybe.", "Blue."),
]


def _data(tmp_path, extra=()):
    recs = [{"prompt": p, "original": o, "edited": e, "id": str(i)} for i, (p, o, e) in enumerate(PAIRS)]
    recs += list(extra)
    path = tmp_path / "edits.jsonl"
    write_jsonl(path, recs)
    return path


def _args(data, out, *more):
    return ["train", "token-rm", "--data", data, "--eval-data", data, "--model", "tiny-random", "--out", out,
            "--steps", "4", "--batch-size", "2", "--lr", "5e-2", "--max-length", "64", "--eval-every", "2",
            "--save-every", "1", "--log-every", "1", "--quiet", "--no-lora", "--top-layers", "1", *more]


def test_train_changes_parameters_and_counts_skips(tmp_path, capsys):
    from finealign.models.token_rm import load_token_rm, new_token_rm

    bad = [
        {"prompt": "Same?", "original": "Identical text.", "edited": "Identical text."},  # identical
        {"prompt": "Empty?", "original": "Something to delete.", "edited": ""},  # empty side
        {"prompt": "Spaces?", "original": "a b", "edited": "a  b"},  # whitespace only
        {"prompt": "Long?", "original": "word " * 200, "edited": "word " * 199 + "end"},  # over max_length
    ]
    data = _data(tmp_path, bad)
    assert run_cli(_args(data, tmp_path / "rm")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["finished"] and summary["step"] == 4
    b = summary["train_pairs"]
    assert (b["records"], b["kept"], b["identical"], b["empty_side"], b["no_change"], b["too_long"]) == (10, 6, 1, 1, 1, 1)
    assert 0.0 <= summary["eval"]["pairwise_acc"] <= 1.0 and summary["eval"]["n_pairs"] == 6
    assert summary["trained_on_pairs"] == 6
    trained, _ = load_token_rm(tmp_path / "rm")
    fresh, _ = new_token_rm("tiny-random", mode="full", top_layers=1, seed=0)
    t, f = dict(trained.named_parameters()), dict(fresh.named_parameters())
    assert not torch.equal(t["head.weight"], f["head.weight"])
    top = [n for n in f if ".layers.1." in n]
    assert top and any(not torch.equal(t[n], f[n]) for n in top)
    # frozen bottom layer unchanged
    assert all(torch.equal(t[n], f[n]) for n in f if ".layers.0." in n)
    events = [json.loads(l) for l in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == [1, 2, 3, 4]
    assert [e["step"] for e in events if e["event"] == "eval"] == [2, 4]


def test_resume_gives_same_final_metrics(tmp_path, capsys):
    data = _data(tmp_path)
    assert run_cli(_args(data, tmp_path / "a", "--loss", "seq_bt")) == 0
    full = json.loads(capsys.readouterr().out)
    assert run_cli(_args(data, tmp_path / "b", "--loss", "seq_bt", "--stop-after", "3")) == 0
    part = json.loads(capsys.readouterr().out)
    assert part["step"] == 3 and not part["finished"] and not (tmp_path / "b" / "eval.json").exists()
    assert run_cli(_args(data, tmp_path / "b", "--loss", "seq_bt")) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["step"] == 4 and resumed["finished"]
    assert resumed["eval"] == full["eval"]
    la = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda evs: [{k: v for k, v in e.items() if k != "tokens_per_s"} for e in evs]
    assert strip(la) == strip(lb)


def test_eval_cli_and_token_cls(tmp_path, capsys):
    data = _data(tmp_path)
    assert run_cli(_args(data, tmp_path / "rm", "--loss", "token_cls", "--steps", "2")) == 0
    capsys.readouterr()
    assert run_cli(["eval-token-rm", tmp_path / "rm", "--data", f"{data}[:4]", "--max-length", "64",
                    "--out", tmp_path / "ev.json", "--quiet"]) == 0
    res = json.loads((tmp_path / "ev.json").read_text())
    assert res["n_pairs"] == 4 and res["pairs"]["records"] == 4
    assert res["n_changed"] > 0 and 0.0 <= res["token_auroc"] <= 1.0
    # a token classifier's reward is log P(fine): flagged below log 0.5 = -0.6931 unless --threshold says otherwise
    assert res["reward"] == "log_sigmoid" and res["threshold"] == pytest.approx(-0.6931, abs=1e-4)
    assert "log 0.5" in res["threshold_is"]
    assert run_cli(["eval-token-rm", tmp_path / "rm", "--data", f"{data}[:4]", "--max-length", "64",
                    "--out", tmp_path / "ev0.json", "--quiet", "--threshold", "0"]) == 0
    res0 = json.loads((tmp_path / "ev0.json").read_text())
    assert res0["threshold"] == 0.0 and res0["threshold_is"] == "given"


def test_limit_counts_usable_pairs(tmp_path, capsys):
    """--limit N trains on N usable pairs: unusable records do not eat into the N."""
    bad = [{"prompt": "Same?", "original": "Identical.", "edited": "Identical."},
           {"prompt": "Spaces?", "original": "a b", "edited": "a  b"}]
    data = _data(tmp_path, bad)
    assert run_cli(_args(data, tmp_path / "rm", "--limit", "5", "--steps", "1")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_pairs"]["kept"] == 6 and summary["trained_on_pairs"] == 5


def test_eval_bf16_close_to_fp32(tmp_path, capsys):
    data = _data(tmp_path)
    assert run_cli(_args(data, tmp_path / "rm", "--steps", "2")) == 0
    capsys.readouterr()
    res = {}
    for mp in ("no", "bf16"):
        assert run_cli(["eval-token-rm", tmp_path / "rm", "--data", data, "--max-length", "64", "--quiet",
                        "--mixed-precision", mp, "--out", tmp_path / f"{mp}.json"]) == 0
        res[mp] = json.loads((tmp_path / f"{mp}.json").read_text())
    assert res["bf16"]["n_pairs"] == res["no"]["n_pairs"] == 6
    assert abs(res["bf16"]["mean_margin"] - res["no"]["mean_margin"]) < 0.1 * max(1.0, abs(res["no"]["mean_margin"]))
    assert run_cli(["eval-token-rm", tmp_path / "rm", "--data", data, "--mixed-precision", "fp8"]) == 1
    assert "mixed_precision" in capsys.readouterr().err


def test_bad_input_fails_cleanly(tmp_path, capsys):
    data = _data(tmp_path)
    assert run_cli(_args(data, tmp_path / "x", "--loss", "nope")) == 1
    assert "loss" in capsys.readouterr().err
    assert run_cli(_args(tmp_path / "missing.jsonl", tmp_path / "x")) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "original": "o", "edited": "e"}\n{"prompt": "p", "edited": "e"}\n')
    assert run_cli(_args(bad, tmp_path / "y")) == 1
    assert "bad.jsonl:2: original" in capsys.readouterr().err


def test_old_flag_spellings_still_work_with_a_deprecation_message(tmp_path, capsys):
    """--max-steps, --no-progress, --full (train) and --output (eval) are the previous release's spellings."""
    data = _data(tmp_path)
    assert run_cli(["train", "token-rm", "--data", data, "--model", "tiny-random", "--out", tmp_path / "rm",
                    "--max-steps", "1", "--batch-size", "2", "--max-length", "64", "--no-progress", "--full",
                    "--top-layers", "1"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["step"] == 1
    cfg = json.loads((tmp_path / "rm" / "train_config.json").read_text())
    assert cfg["max_steps"] == 1 and cfg["lora"] is False  # the first release's names (old runs resume)
    for old, new in (("--max-steps", "--steps"), ("--no-progress", "--quiet"), ("--full", "--no-lora")):
        assert f"{old} is deprecated" in cap.err and f"use {new}" in cap.err
    assert run_cli(["eval-token-rm", tmp_path / "rm", "--data", data, "--max-length", "64", "--quiet",
                    "--output", tmp_path / "ev.json"]) == 0
    assert "--output is deprecated" in capsys.readouterr().err and (tmp_path / "ev.json").exists()
    y = tmp_path / "old.yaml"
    y.write_text("max_steps: 2\n")
    from finealign.config import build_config
    from finealign.train.token_rm_config import TokenRMConfig

    seen = []
    cfg = build_config(TokenRMConfig, y, warn=seen.append, data=[str(data)], out="o")
    assert cfg.steps == 2 and "old.yaml:1: max_steps is deprecated" in seen[0]


def test_anchor_weight_only_with_span_bt():
    from finealign.errors import FinealignError
    from finealign.train.token_rm_config import TokenRMConfig

    with pytest.raises(FinealignError, match="anchor_weight: only the span_bt loss has an anchor; loss span_bt_pure"):
        TokenRMConfig(data=["x.jsonl"], out="o", loss="span_bt_pure", anchor_weight=1.0)
    assert TokenRMConfig(data=["x.jsonl"], out="o", loss="span_bt", anchor_weight=1.0).anchor_weight == 1.0
