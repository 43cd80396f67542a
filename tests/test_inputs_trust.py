"""Inputs a user can trust (issue 12, faults 4-9): typed CSV cells, one prompt format per exported
file, Unicode-equal text, identical chosen/rejected as ties, ``{prompt, response}`` scoring input,
empty responses scored and counted (empty prompts stay errors)."""

from __future__ import annotations

import csv
import json
import math
import unicodedata

import pytest

from finealign.data.io import read_records
from finealign.data.records import EditRecord, PairRecord, RatingRecord
from finealign.errors import DataError, FinealignError
from conftest import run_cli


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------ 4. CSV cells are text

@pytest.mark.parametrize("kind,row", [
    ("pair", {"prompt": "Give JSON.", "chosen": '{"answer": 42}', "rejected": "[1, 2]"}),
    ("response", {"prompt": "First primes?", "completion": "[2, 3, 5]"}),
    ("pair", {"prompt": "[1, 2, 3]", "chosen": "6", "rejected": "{}"}),
    ("rating", {"prompt": '{"q": 1}', "response": '["a"]', "score": "3"}),
    ("edit", {"prompt": "p", "original": '{"x": 1}', "edited": '{"x": 2}'}),
    ("kto", {"prompt": "p", "completion": "[true]", "label": "true"}),
])
def test_csv_cells_that_look_like_json_stay_text_like_jsonl(tmp_path, kind, row):
    c = _csv(tmp_path / "d.csv", list(row), [list(row.values())])
    j = _jsonl(tmp_path / "d.jsonl", [row])
    assert read_records(c, kind) == read_records(j, kind)
    rec = read_records(c, kind)[0]
    assert isinstance(rec.prompt, str) and rec.prompt == row["prompt"]


def test_csv_columns_whose_schema_asks_for_structure(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    c = _csv(tmp_path / "d.csv", ["prompt", "chosen", "rejected", "meta"],
             [[json.dumps(msgs), '{"a": 1}', "no", '{"source": "x"}']])
    (r,) = read_records(c)
    assert r.prompt == msgs and r.chosen == '{"a": 1}' and r.meta == {"source": "x"}
    # a NAME:json header asks for JSON explicitly; malformed JSON there names line and field
    c2 = _csv(tmp_path / "e.csv", ["prompt:json", "completion"], [['"quoted prompt"', "a"], ["[oops", "b"]])
    with pytest.raises(DataError, match=r"e.csv:3: prompt: not valid JSON"):
        read_records(c2)
    c3 = _csv(tmp_path / "f.csv", ["prompt:json", "completion"], [[json.dumps(msgs), "a"]])
    assert read_records(c3)[0].prompt == msgs


# ------------------------------------------------------------------ 5. one prompt format per exported file

def test_export_standard_with_a_tokenizer_renders_every_prompt(tiny, tmp_path):
    from finealign.data.chat import render_prompt
    from finealign.data.trl_export import to_trl

    tok = tiny[1]
    prompts = ["Plain question?", [{"role": "user", "content": "One user turn"}],
               [{"role": "system", "content": "Sys."}, {"role": "user", "content": "Q"}],
               [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]]
    recs = [PairRecord(p, "yes", "no") for p in prompts]
    rows = to_trl(recs, "dpo", "standard", tokenizer=tok).rows
    assert [r["prompt"] for r in rows] == [render_prompt(tok, p) for p in prompts]
    assert all(r["prompt"].endswith("<|im_start|>assistant\n") for r in rows)  # one format
    # without a tokenizer: plain text, and a prompt with no plain form is an error
    plain = to_trl(recs[:2], "dpo", "standard").rows
    assert [r["prompt"] for r in plain] == ["Plain question?", "One user turn"]
    with pytest.raises(FinealignError, match="needs a tokenizer"):
        to_trl(recs, "dpo", "standard")
    # a prompt already rendered stays as it is; it cannot become chat messages
    rendered = render_prompt(tok, "Plain question?")
    assert to_trl([PairRecord(rendered, "y", "n")], "dpo", "standard", tokenizer=tok).rows[0]["prompt"] == rendered
    with pytest.raises(FinealignError, match="already carries a chat template"):
        to_trl([PairRecord(rendered, "y", "n")], "dpo", "conversational")


def test_cli_export_standard_with_tokenizer_is_one_format(tmp_path):
    src = _jsonl(tmp_path / "p.jsonl", [{"prompt": "Q1", "chosen": "a", "rejected": "b"},
                                        {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q2"}],
                                         "chosen": "a", "rejected": "b"}])
    out = tmp_path / "o.jsonl"
    assert run_cli(["data", "export-trl", src, out, "--format", "standard", "--tokenizer", "tiny-random"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["prompt"].startswith("<|im_start|>system\n") for r in rows)


# ------------------------------------------------------------------ 6. Unicode normal forms are no edit

def test_nfc_and_nfd_are_the_same_text(tiny):
    from finealign.core.align import align_edit, diff_char_spans, edit_ratio
    from finealign.edits.minimality import UNCHANGED, check_edit

    nfc = "Le café est bon."
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd and len(nfd) == len(nfc) + 1
    for g in ("word", "char"):
        assert diff_char_spans(nfc, nfd, granularity=g) == ([], [])
    assert edit_ratio(nfd, nfc) == 0.0 and check_edit(nfd, nfc).status == UNCHANGED
    al = align_edit(nfd, nfc, tiny[1])
    assert al.n_changed == (0, 0)
    # a real edit of an NFD text: spans index the original strings as given
    edited = "Le café est mauvais."
    (so,), (se,) = diff_char_spans(nfd, edited)
    assert nfd[so[0]:so[1]] == "bon" and edited[se[0]:se[1]] == "mauvais"
    (so,), (se,) = diff_char_spans(nfd, edited, granularity="char")
    assert nfd[so[0]:so[1]] == "bon" and edited[se[0]:se[1]] == "mauvais"  # no common character
    # 1 replaced word unit of 5 (Le, café, est, bon, "."): 1 / 5
    assert edit_ratio(nfd, edited) == pytest.approx(1 / 5)


def test_token_rm_does_not_train_on_a_normal_form_change(tiny):
    from finealign.models.token_rm_data import build_pair_examples

    nfc = "The café is open."
    recs = [EditRecord("q", unicodedata.normalize("NFD", nfc), nfc), EditRecord("q", "The cafe is shut.", nfc)]
    ex, st = build_pair_examples(recs, tiny[1], 256)
    assert st.identical == 1 and st.kept == 1 and len(ex) == 1


# ------------------------------------------------------------------ 7. identical chosen and rejected

def test_identical_pairs_are_counted_and_skipped_as_ties(tiny, tmp_path):
    from finealign.data.stats import compute_stats
    from finealign.data.trl_export import to_trl
    from finealign.train.preference import pref_rows

    nfc = "Un café."
    recs = [PairRecord("q", "same", "same"), PairRecord("q", nfc, unicodedata.normalize("NFD", nfc) + " "),
            PairRecord("q", "good", "bad")]
    assert compute_stats(recs, tiny[1]).counts["identical_pairs"] == 2
    ex = to_trl(recs, "dpo", "conversational")
    assert len(ex.rows) == 1 and ex.skipped["identical chosen and rejected"] == 2
    assert len(to_trl(recs, "kto", "conversational").rows) == 2  # the one usable pair, both sides
    rows, ties = pref_rows(recs, "dpo", tiny[1])
    assert len(rows) == 1 and ties == 2
    bench = _jsonl(tmp_path / "b.jsonl", [r.to_obj() for r in recs])
    out = tmp_path / "ev"
    assert run_cli(["eval-rm", "--scorer", "length", "--benchmark", bench, "--out", out, "--n-boot", "10", "-q"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["items"] == 1 and res["skipped"] == {"identical chosen and rejected (ties)": 2}
    assert "left out: 2 identical chosen and rejected (ties)" in (out / "results.md").read_text()


def test_label_drops_identical_best_and_worst():
    from finealign.data.records import ResponseRecord
    from finealign.train.labeling import LabelConfig, label_records

    recs = [ResponseRecord("q", t, prompt_id="1", sample=i) for i, t in enumerate(["same", "same "])]
    rows, st = label_records(recs, lambda rs: [float(len(r.completion)) for r in rs], LabelConfig())
    assert rows == [] and st.dropped == {"identical responses": 1}


# ------------------------------------------------------------------ 8. scoring {prompt, response}

def test_score_accepts_prompt_response_records(tmp_path, capsys):
    inp = _jsonl(tmp_path / "r.jsonl", [{"prompt": "q", "response": "hello"}, {"prompt": "q", "response": "hi"}])
    out = tmp_path / "o.jsonl"
    assert run_cli(["score", "--scorer", "length", inp, out, "-q"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["reward"], r["scorer"]) for r in rows] == [(5.0, "length"), (2.0, "length")]
    assert all("score" not in r for r in rows)  # the output does not read as human ratings
    assert [r.kind for r in read_records(out)] == ["response", "response"]
    bad = _jsonl(tmp_path / "p.jsonl", [{"prompt": "only a prompt"}])
    assert run_cli(["score", "--scorer", "length", bad, tmp_path / "x.jsonl", "-q"]) == 1
    err = capsys.readouterr().err
    for name in ("`completion`", "`response`", "`chosen`", "`rejected`", "`score`"):
        assert name in err


# ------------------------------------------------------------------ 9. empty responses

@pytest.fixture(scope="module")
def seqcls_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from finealign.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("rm")
    LlamaForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_every_scorer_scores_an_empty_response(tiny, tmp_path, seqcls_dir):
    import torch

    from finealign.models.token_rm import new_token_rm
    from finealign.rewards import load_scorer

    model, tok = tiny
    rm, rtok = new_token_rm("tiny-random", mode="full", top_layers=1, seed=0)
    rm.save(tmp_path / "rm", rtok)
    scorers = {"length": load_scorer("length"),
               "direct": load_scorer("direct:tiny-random", model=model, tokenizer=tok),
               "flr": load_scorer("flr:tiny-random", model=model, tokenizer=tok),
               "seqcls": load_scorer(f"seqcls:{seqcls_dir},device=cpu"),
               "token-rm": load_scorer(f"token-rm:{tmp_path / 'rm'},device=cpu")}
    for name, sc in scorers.items():
        vals = sc.score(["Say something.", "Say something."], ["", "Hello."])
        assert len(vals) == 2 and all(math.isfinite(v) for v in vals), name
    assert scorers["length"].score(["q"], [""]) == [0.0]
    ts = scorers["token-rm"].score_tokens(["q"], [""])[0]  # an empty response is its stop token alone
    assert ts.offsets == [(0, 0)] and scorers["token-rm"].score(["q"], [""]) == [ts.rewards[0]]
    # direct: the empty response scores log p(<|im_end|> | prompt, assistant turn opened)
    from finealign.data.chat import render_prompt

    ids = tok(render_prompt(tok, "Say something."), add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    expected = float(lp[tok.convert_tokens_to_ids("<|im_end|>")])
    assert scorers["direct"].score(["Say something."], [""])[0] == pytest.approx(expected, abs=1e-5)


def test_eval_rm_with_an_empty_rejected_evaluates_everything(tmp_path):
    bench = _jsonl(tmp_path / "b.jsonl", [{"prompt": "q1", "chosen": "a fine answer", "rejected": ""},
                                          {"prompt": "q2", "chosen": "yes", "rejected": "no, not at all"},
                                          {"prompt": "q3", "chosen": "", "rejected": "something"}])
    out = tmp_path / "ev"
    assert run_cli(["eval-rm", "--scorer", "direct:tiny-random,device=cpu", "--benchmark", bench, "--out", out,
                    "--n-boot", "10", "-q"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["items"] == 3 and res["empty_responses"] == 2
    assert res["metrics"]["length"]["overall"]["accuracy"] == pytest.approx(1 / 3)  # only q1: 13 > 0
    assert "empty responses scored as they are: 2" in (out / "results.md").read_text()


def test_score_and_label_count_empty_responses(tmp_path, capsys):
    inp = _jsonl(tmp_path / "r.jsonl", [{"prompt": "q", "prompt_id": "1", "sample": i, "completion": c}
                                        for i, c in enumerate(["", "an answer", "  "])])
    assert run_cli(["score", "--scorer", "length", inp, tmp_path / "s.jsonl", "-q"]) == 0
    assert "empty responses: 2" in capsys.readouterr().out
    assert run_cli(["label", "--scorer", "length", inp, tmp_path / "l.jsonl", "-q"]) == 0
    assert "(2 empty, scored as they are)" in capsys.readouterr().out
    (pair,) = read_records(tmp_path / "l.jsonl")
    assert pair.chosen == "an answer" and pair.rejected == ""  # length 9 vs 0 ("" wins the tie with "  " by order)


def test_empty_prompts_stay_errors_and_empty_responses_load(tmp_path):
    ok = _jsonl(tmp_path / "ok.jsonl", [{"prompt": "q", "chosen": "", "rejected": "b"}])
    assert read_records(ok, "pair")[0].chosen == ""
    r = _jsonl(tmp_path / "r.jsonl", [{"prompt": "q", "response": "", "score": 1}])
    assert isinstance(read_records(r)[0], RatingRecord)
    for bad in ({"prompt": "", "chosen": "a", "rejected": "b"}, {"prompt": [], "chosen": "a", "rejected": "b"},
                {"prompt": [{"role": "user", "content": " "}], "chosen": "a", "rejected": "b"}):
        p = _jsonl(tmp_path / "bad.jsonl", [bad])
        with pytest.raises(DataError, match=r"bad.jsonl:1: prompt"):
            read_records(p)
