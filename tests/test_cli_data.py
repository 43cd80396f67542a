"""``finealign data convert|list|stats|export-trl`` end to end (in-process), including bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from finealign.data.adapters import DATASETS, load_dataset
from finealign.data.io import iter_objects, read_records, write_jsonl
from finealign.data.records import EditRecord, PairRecord, RatingRecord
from finealign.data.stats import percentile, summarize

PAIR = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}


@pytest.fixture(scope="module")
def tok():
    """The tiny model's tokenizer (no model weights needed)."""
    from finealign.models import load_tokenizer

    return load_tokenizer("tiny-random")


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- convert

@pytest.mark.parametrize("name", list(DATASETS))
def test_convert_each_shared_set(shared_data, tmp_path, capsys, name):
    out = tmp_path / f"{name}.jsonl"
    assert run_cli(["data", "convert", "--from", name, out]) == 0
    n = len(load_dataset(name))
    assert capsys.readouterr().out.strip() == str(n)
    back = read_records(out, DATASETS[name].kind)
    assert len(back) == n > 0


def test_convert_with_explicit_source(tmp_path, capsys):
    src = _write(tmp_path / "test.jsonl", [{"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                                            "rejected": "\n\nHuman: hi\n\nAssistant: go away"}] * 3)
    out = tmp_path / "o" / "pairs.jsonl"
    assert run_cli(["data", "convert", "--from", "hh-harmless", src, out]) == 0
    assert capsys.readouterr().out.strip() == "3"
    recs = read_records(out)
    assert [type(r) for r in recs] == [PairRecord] * 3 and recs[0].rejected == "go away"


HH_GOOD = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: bye"}


@pytest.mark.parametrize("second,where", [
    ('{"chosen": "\\n\\nHuman: hi", "rejected": ', ":2: malformed JSON"),          # malformed JSON line
    ({"chosen": HH_GOOD["chosen"]}, ":2: rejected: missing"),                       # missing field
    ({"chosen": ["x"], "rejected": "y"}, ":2: chosen: expected a string, got list"),  # mistyped field
    ({"chosen": "", "rejected": "y"}, ":2: chosen: empty"),                         # empty response
    ({"chosen": "\n\nAssistant: a", "rejected": "\n\nAssistant: b"}, ":2: chosen: no Human turn"),  # empty prompt
    (b'{"chosen": "\xff", "rejected": "x"}', ":2: not valid UTF-8"),               # non-UTF-8 bytes
])
def test_convert_bad_input_fails_cleanly(tmp_path, capsys, second, where):
    src = tmp_path / "test.jsonl"
    raw = second if isinstance(second, bytes) else (second if isinstance(second, str) else json.dumps(second)).encode()
    src.write_bytes(json.dumps(HH_GOOD).encode() + b"\n" + raw + b"\n")
    out = tmp_path / "out.jsonl"
    assert run_cli(["data", "convert", "--from", "hh-harmless", src, out]) != 0
    err = capsys.readouterr().err
    assert f"{src}{where}" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["test.jsonl"]


def test_convert_failure_keeps_existing_output(tmp_path, capsys):
    out = write_jsonl(tmp_path / "out.jsonl", [PAIR])
    before = out.read_bytes()
    src = _write(tmp_path / "test.jsonl", ["{broken"])
    assert run_cli(["data", "convert", "--from", "hh-harmless", src, out]) != 0
    assert f"{src}:1: malformed JSON" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_convert_usage_errors(tmp_path, capsys):
    assert run_cli(["data", "convert", "--from", "nope", tmp_path / "o.jsonl"]) != 0
    assert "unknown data set 'nope'" in capsys.readouterr().err
    assert run_cli(["data", "convert", "--from", "mt-bench", tmp_path / "o.csv"]) != 0
    assert "must be a .jsonl file" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_list_json(capsys, shared_data):
    assert run_cli(["data", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(DATASETS)
    by = {r["name"]: r for r in rows}
    assert by["mt-bench"]["count"] == len(load_dataset("mt-bench")) and by["hh-harmless"]["license"] == "MIT"


# ------------------------------------------------------------------------------------------------ stats

def test_percentile_nearest_rank_by_hand():
    v = list(range(1, 11))  # 1..10
    # p50: ceil(0.5 * 10) = 5th value = 5; p90: 9th = 9; p99: ceil(9.9) = 10th = 10
    assert (percentile(v, 50), percentile(v, 90), percentile(v, 99)) == (5, 9, 10)
    s = summarize([4, 1, 3])  # sorted 1, 3, 4: p50 = ceil(1.5) = 2nd = 3; mean 8/3
    assert (s.n, s.p50, s.p90, s.max) == (3, 3, 4, 4) and s.mean == pytest.approx(8 / 3)


def test_stats_on_tiny_tokenizer(tmp_path, capsys, tok):
    recs = [EditRecord(prompt="Fix this.", original="The sky is green " * k, edited="The sky is blue " * k)
            for k in (1, 2, 3, 8)] + [EditRecord(prompt="Fix this.", original="Same.", edited="Same.")]
    f = write_jsonl(tmp_path / "e.jsonl", recs)
    assert run_cli(["data", "stats", f, "--tokenizer", "tiny-random", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["kind"] == "edit" and st["counts"]["records"] == 5 and st["counts"]["changed"] == 4
    lens = sorted(len(tok(r.original, add_special_tokens=False)["input_ids"]) for r in recs)
    assert st["lengths"]["original"]["max"] == lens[-1]
    assert st["lengths"]["original"]["p50"] == lens[2]  # ceil(0.5 * 5) = 3rd smallest
    # the prompt is counted with the chat template, so it is longer than its text
    assert st["lengths"]["prompt"]["p50"] > len(tok("Fix this.", add_special_tokens=False)["input_ids"])
    assert run_cli(["data", "stats", f, "--tokenizer", "tiny-random"]) == 0
    assert "5 edit records" in capsys.readouterr().out


def test_stats_ratings_and_bad_file(tmp_path, capsys):
    f = write_jsonl(tmp_path / "r.jsonl", [RatingRecord("Q", "A", s) for s in (1.0, 2.0, 5.0)])
    assert run_cli(["data", "stats", f, "-t", "tiny-random", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["values"]["score"]["mean"] == pytest.approx(8 / 3) and st["values"]["score"]["max"] == 5.0
    bad = _write(tmp_path / "bad.jsonl", [PAIR, {"prompt": "", "chosen": "y", "rejected": "n"}])
    assert run_cli(["data", "stats", bad, "-t", "tiny-random"]) != 0
    assert f"{bad}:2: prompt: empty" in capsys.readouterr().err


@pytest.mark.slow
def test_stats_default_tokenizer_on_mt_bench(shared_data, tmp_path, capsys):
    f = tmp_path / "mt.jsonl"
    assert run_cli(["data", "convert", "--from", "mt-bench", f]) == 0
    capsys.readouterr()
    assert run_cli(["data", "stats", f, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["tokenizer"] == "smollm2-135m-instruct" and st["counts"]["records"] == 80
    assert 0 < st["lengths"]["prompt"]["p50"] <= st["lengths"]["prompt"]["p90"] <= st["lengths"]["prompt"]["max"]


# ------------------------------------------------------------------------------------------- export-trl

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Q?"}]


def test_export_dpo_conversational_loads_in_trl(tmp_path, capsys, tok):
    from datasets import load_dataset as hf_load
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    f = write_jsonl(tmp_path / "p.jsonl", [PairRecord(CHAT, "Good.", "Bad."), PairRecord("Plain?", "A", "B")])
    out = tmp_path / "dpo.jsonl"
    assert run_cli(["data", "export-trl", f, out]) == 0
    assert capsys.readouterr().out.strip() == "2"
    ds = hf_load("json", data_files=str(out), split="train")
    assert ds.column_names == ["prompt", "chosen", "rejected"] and is_conversational(ds[0])
    assert ds[1]["prompt"] == [{"role": "user", "content": "Plain?"}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "Good."}]
    rendered = maybe_apply_chat_template(ds[0], tok)
    assert rendered["prompt"].endswith("<|im_start|>assistant\n") and rendered["chosen"].startswith("Good.")


def test_export_kto_and_sft_from_edits_standard(tmp_path, capsys):
    from trl.data_utils import is_conversational

    f = write_jsonl(tmp_path / "e.jsonl", [EditRecord("Q1", "wrong", "right"), EditRecord("Q2", "same", "same"),
                                           EditRecord("Q3", "all bad", "")])
    kto = tmp_path / "kto.jsonl"
    assert run_cli(["data", "export-trl", f, kto, "--to", "kto"]) == 0
    rows = [o for _, o in iter_objects(kto)]
    # Q1 -> right (true), wrong (false); Q2 unchanged: left out; Q3 -> only the original (false)
    assert [(r["prompt"], r["completion"], r["label"]) for r in rows] == [
        ("Q1", "right", True), ("Q1", "wrong", False), ("Q3", "all bad", False)]
    assert not is_conversational(rows[0])
    sft = tmp_path / "sft.jsonl"
    assert run_cli(["data", "export-trl", f, sft, "--to", "sft", "--format", "conversational"]) == 0
    rows = [o for _, o in iter_objects(sft)]
    assert [r["completion"][0]["content"] for r in rows] == ["right", "same"]
    dpo = tmp_path / "dpo.jsonl"
    assert run_cli(["data", "export-trl", f, dpo]) == 0  # default for edits: dpo, edited over original
    assert [(o["chosen"], o["rejected"]) for _, o in iter_objects(dpo)] == [("right", "wrong")]


def test_export_standard_multiturn_needs_tokenizer(tmp_path, capsys):
    f = write_jsonl(tmp_path / "p.jsonl", [PairRecord(CHAT, "Good.", "Bad.")])
    out = tmp_path / "o.jsonl"
    assert run_cli(["data", "export-trl", f, out, "--format", "standard"]) != 0
    assert "prompt has 3 messages" in capsys.readouterr().err and not out.exists()
    assert run_cli(["data", "export-trl", f, out, "--format", "standard", "-t", "tiny-random"]) == 0
    (row,) = [o for _, o in iter_objects(out)]
    assert row["prompt"].count("<|im_start|>user") == 2 and row["chosen"] == "Good."


def test_export_ratings_prompts_and_bad_input(tmp_path, capsys):
    f = write_jsonl(tmp_path / "r.jsonl", [RatingRecord("Q", "A", s) for s in (1.0, 4.0, 5.0)])
    out = tmp_path / "o.jsonl"
    assert run_cli(["data", "export-trl", f, out]) != 0
    assert "--threshold" in capsys.readouterr().err and not out.exists()
    assert run_cli(["data", "export-trl", f, out, "--threshold", "4"]) == 0
    assert [o["label"] for _, o in iter_objects(out)] == [False, True, True]
    assert run_cli(["data", "export-trl", f, out, "--to", "prompt"]) == 0
    assert [o for _, o in iter_objects(out)] == [{"prompt": "Q"}]  # duplicates removed
    assert run_cli(["data", "export-trl", f, out, "--to", "dpo"]) != 0
    assert "cannot export rating records as dpo" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.jsonl", [PAIR, {"prompt": "Q", "chosen": "y", "rejected": 3}])
    out2 = tmp_path / "o2.jsonl"
    assert run_cli(["data", "export-trl", bad, out2]) != 0
    assert f"{bad}:2: rejected: expected a string, got int" in capsys.readouterr().err
    assert not out2.exists()
