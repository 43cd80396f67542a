"""Adapters for the public data sets: hand-made source files with worked expectations, then the real
shared files (skipped when the shared folder is missing) checked against their README facts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finealign.data.adapters import DATASETS, alpaca_eval_leaderboard, convert_dataset, dataset_path, load_dataset
from finealign.data.adapters_pref import split_hh_pair, transcript_messages
from finealign.data.records import EditRecord, PairRecord, PromptRecord, RatingRecord, ResponseRecord
from finealign.errors import DataError, FinealignError


def _jsonl(path: Path, objs: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


def _json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- HH-RLHF

def test_transcript_to_messages_merges_repeated_speaker():
    t = "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nAssistant: Anything else?\n\nHuman: No\n\nAssistant:"
    assert transcript_messages(t) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello.\n\nAnything else?"},
        {"role": "user", "content": "No"},
    ]
    with pytest.raises(ValueError, match="before the first"):
        transcript_messages("preamble\n\nHuman: x")


def test_split_hh_pair_cuts_at_last_shared_assistant_marker():
    pre = "\n\nHuman: Q1\n\nAssistant: A1\n\nHuman: Q2"
    prefix, c, r = split_hh_pair(pre + "\n\nAssistant: Good", pre + "\n\nAssistant: Bad")
    assert (prefix, c, r) == (pre, "Good", "Bad")
    # transcripts that differ before the last turn: the prefix stops at the last shared marker
    prefix, c, r = split_hh_pair(pre + "\n\nAssistant: X\n\nHuman: more\n\nAssistant: Y", pre + "\n\nAssistant: Z")
    assert prefix == pre and c == "X\n\nHuman: more\n\nAssistant: Y" and r == "Z"


def test_hh_adapter(tmp_path):
    pre = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why?\n\nHuman: Locked out"
    src = _jsonl(tmp_path / "hh" / "test.jsonl", [
        {"chosen": pre + "\n\nAssistant: Call a locksmith.", "rejected": pre + "\n\nAssistant: Use a pin."},
        {"chosen": pre + "\n\nAssistant: ", "rejected": pre + "\n\nAssistant: Use a pin."},  # empty chosen
    ])
    loaded = convert_dataset("hh-harmless", src.parent)  # a folder holding test.jsonl works too
    (r,) = loaded.records
    assert loaded.skipped == {"empty chosen reply": 1}
    assert r == PairRecord(prompt=[{"role": "user", "content": "How do I pick a lock?"},
                                   {"role": "assistant", "content": "Why?"},
                                   {"role": "user", "content": "Locked out"}],
                           chosen="Call a locksmith.", rejected="Use a pin.", id="1", subset="harmless-base",
                           meta={"line": 1})


@pytest.mark.parametrize("obj,field", [
    ({"chosen": "\n\nHuman: a\n\nAssistant: b"}, "rejected"),
    ({"chosen": 3, "rejected": "x"}, "chosen"),
    ({"chosen": "\n\nAssistant: only", "rejected": "\n\nAssistant: other"}, "chosen"),
])
def test_hh_bad_rows_name_line_and_field(tmp_path, obj, field):
    good = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
    src = _jsonl(tmp_path / "test.jsonl", [good, obj])
    with pytest.raises(DataError, match=rf"^{src}:2: {field}: "):
        load_dataset("hh-harmless", src)


# --------------------------------------------------------------------------------------- AlpacaEval 2

def _ann(instruction, o1, o2, pref, g2="model-x"):
    return {"instruction": instruction, "output_1": o1, "generator_1": "gpt4_1106_preview", "output_2": o2,
            "generator_2": g2, "dataset": "oasst", "preference": pref}


def test_alpaca_eval_soft_labels(tmp_path):
    src = _json(tmp_path / "ann" / "model-x.json", [
        _ann("i0", "ref0", "mod0", 1.75),  # P(output_2) = 0.75 > 0.5: chosen = output_2, p_chosen = 0.75
        _ann("i1", "ref1", "mod1", 1.2),   # P(output_2) = 0.2: chosen = output_1, p_chosen = 1 - 0.2 = 0.8
        _ann("i2", "ref2", "mod2", 1.5),   # exact tie: original order, p_chosen = 0.5
        _ann("i3", "ref3", "mod3", None),  # no judgment: left out
    ])
    loaded = convert_dataset("alpaca-eval", src.parent)
    a, b, c = loaded.records
    assert (a.chosen, a.rejected, a.p_chosen) == ("mod0", "ref0", pytest.approx(0.75))
    assert (b.chosen, b.rejected, b.p_chosen) == ("ref1", "mod1", pytest.approx(0.8))
    assert (c.chosen, c.rejected, c.p_chosen) == ("ref2", "mod2", 0.5)
    assert a.subset == "model-x" and a.prompt == "i0" and a.id == "model-x:0"
    assert a.meta["dataset"] == "oasst" and a.meta["preference"] == 1.75
    assert loaded.skipped == {"no preference": 1}


def test_alpaca_eval_bad_preference(tmp_path):
    src = _json(tmp_path / "m.json", [_ann("i0", "a", "b", 1.5), _ann("i1", "a", "b", 2.5)])
    with pytest.raises(DataError, match=rf"^{src}:2: preference: expected a number in \[1, 2\]"):
        load_dataset("alpaca-eval", src)
    src = _json(tmp_path / "m.json", [{"instruction": "i", "output_1": "a", "generator_1": "g", "preference": 1.5}])
    with pytest.raises(DataError, match=rf"^{src}:1: output_2: missing"):
        load_dataset("alpaca-eval", src)


def test_alpaca_outputs_prompt_ids_follow_reference_order(tmp_path):
    d = tmp_path / "model_outputs"
    _json(d / "gpt4_1106_preview.json", [{"instruction": f"i{k}", "output": f"r{k}", "generator":
                                          "gpt4_1106_preview", "dataset": "koala"} for k in range(3)])
    _json(d / "a-model.json", [{"instruction": "i2", "output": "a2", "generator": "a-model"},
                               {"instruction": "i0", "output": "", "generator": "a-model"}])
    recs = load_dataset("alpaca-eval-outputs", tmp_path)  # the top folder resolves to model_outputs/
    assert all(isinstance(r, ResponseRecord) for r in recs) and len(recs) == 5
    by = {(r.meta["system"], r.prompt): r for r in recs}
    assert by[("a-model", "i2")].prompt_id == "2" and by[("a-model", "i0")].prompt_id == "0"
    assert by[("a-model", "i0")].completion == ""  # an empty model output is still that system's output
    assert by[("gpt4_1106_preview", "i1")].id == "gpt4_1106_preview:1"


def test_leaderboard(tmp_path):
    p = tmp_path / "lb.csv"
    p.write_text(",win_rate,standard_error\nmodel-a,15.5,1.0\nmodel-b,2.25,0.3\n")
    assert alpaca_eval_leaderboard(p) == {"model-a": 15.5, "model-b": 2.25}
    p.write_text(",win_rate\nmodel-a,high\n")
    with pytest.raises(DataError, match=rf"^{p}:2: win_rate: expected a number"):
        alpaca_eval_leaderboard(p)


# ------------------------------------------------------------------------------------------ QA-Feedback

def _qa(pref, corrected="Pred one fixed."):
    return {"question": "Who?", "passages": [["Title A", "Title A\n\nFirst sentence.", "Second."]],
            "prediction 1": "Pred one.", "prediction 2": "Pred two.", "prediction 3": "Pred three.",
            "prediction 4": "Pred four.", "preference": pref,
            "feedback": {"errors": [{"error type": "Irrelevant", "start": 0, "end": 4}], "missing-info": [],
                         "corrected-prediction": corrected}}


def test_qa_feedback_edits_and_pairs(tmp_path):
    src = _json(tmp_path / "dev_feedback.json", [_qa([1, 2, 0, 1, 1, 2]), _qa([0] * 6, corrected="Pred one."),
                                                 _qa([0] * 6, corrected="")])
    edits = load_dataset("qa-feedback-edits", src)
    assert [e.meta["changed"] for e in edits] == [True, False, True]
    assert edits[2].edited == ""  # everything deleted: kept as an edit
    assert edits[0].original == "Pred one." and edits[0].edited == "Pred one fixed."
    assert edits[0].prompt.endswith("[1] Title A: First sentence. Second.") and "Question: Who?" in edits[0].prompt
    assert edits[0].meta["errors"][0]["end"] == 4
    pairs = convert_dataset("qa-feedback-pairs", src)
    # labels for (1v2, 1v3, 1v4, 2v3, 2v4, 3v4) = 1, 2, 0, 1, 1, 2 -> winners 1, 3, -, 2, 2, 4
    got = [(p.chosen, p.rejected) for p in pairs.records]
    assert got == [("Pred one.", "Pred two."), ("Pred three.", "Pred one."), ("Pred two.", "Pred three."),
                   ("Pred two.", "Pred four."), ("Pred four.", "Pred three.")]
    assert pairs.skipped == {"no preference (label 0)": 1 + 6 + 6}


def test_qa_feedback_bad_label(tmp_path):
    src = _json(tmp_path / "dev_feedback.json", [_qa([1, 2, 0, 1, 1, 3])])
    with pytest.raises(DataError, match=rf"^{src}:1: preference: expected labels 0, 1 or 2"):
        load_dataset("qa-feedback-pairs", src)
    src = _json(tmp_path / "dev_feedback.json", [_qa([1, 2])])
    with pytest.raises(DataError, match=rf"^{src}:1: preference: expected 6 items, got 2"):
        load_dataset("qa-feedback-pairs", src)


# ----------------------------------------------------------------------------------- DeFacto, ExpertQA

def _defacto(err, summary, cand="The cat sat."):
    return {"article": "A long article.", "candidate": cand, "doc_id": 7, "has_error": err,
            "intrinsic_error": False, "extrinsic_error": err,
            "feedback": {"summary": summary, "instruction": "Replace cat with dog.", "explanation": "", "evidence": ""}}


def test_defacto(tmp_path):
    _jsonl(tmp_path / "val.jsonl", [_defacto(True, "The dog sat."), _defacto(False, ""),
                                    _defacto("True", "The cat sat."), _defacto("False", "")])
    loaded = convert_dataset("defacto-val", tmp_path)
    a, b = loaded.records
    assert isinstance(a, EditRecord) and a.original == "The cat sat." and a.edited == "The dog sat."
    assert a.prompt == "Summarize the following article in one sentence.\n\nA long article."
    assert a.meta["changed"] and not b.meta["changed"] and a.meta["instruction"] == "Replace cat with dog."
    assert loaded.skipped == {"has_error is false": 2}
    _jsonl(tmp_path / "val.jsonl", [_defacto("yes", "x")])
    with pytest.raises(DataError, match=r"val\.jsonl:1: has_error: expected true or false"):
        load_dataset("defacto-val", tmp_path)
    _jsonl(tmp_path / "val.jsonl", [{**_defacto(True, "x"), "feedback": {}}])
    with pytest.raises(DataError, match=r"val\.jsonl:1: feedback\.summary: missing"):
        load_dataset("defacto-val", tmp_path)


def test_expertqa(tmp_path):
    row = {"question": "Q?", "system": "gpt4", "metadata": {"field": "Law"}, "answer_string": "Old [1]."}
    src = _jsonl(tmp_path / "e.jsonl", [{**row, "revised_answer_string": "New [1]."},
                                        {**row, "revised_answer_string": "Old [1]."},
                                        {**row, "revised_answer_string": ""}])
    loaded = convert_dataset("expertqa-edits", src)
    (r,) = loaded.records
    assert (r.prompt, r.original, r.edited, r.meta["system"], r.meta["field"]) == ("Q?", "Old [1].", "New [1].",
                                                                                    "gpt4", "Law")
    assert loaded.skipped == {"unchanged": 1, "empty revised answer": 1}


# ----------------------------------------------------------------------------------- Prometheus, MT-Bench

def _grading_prompt(instruction: str, response: str) -> str:
    return ("###Task Description:\nAn instruction ...\n\n###The instruction to evaluate:\n" + instruction +
            "\n\n###Response to evaluate:\n" + response + "\n\n###Reference Answer (Score 5):\nRef answer."
            "\n\n###Score Rubrics:\n[Is it good?]\nScore 1: bad.\n\n###Feedback: ")


def test_prometheus(tmp_path):
    dialogue = ("Here is a previous dialogue between an assistant and an user. Generate a human preferable "
                "response by the assistant.\nUser: First q\n\nAssistant:First a\n\nUser: Second q\n\nAssistant: ")
    src = _json(tmp_path / "vicuna_eval.json", [
        {"idx": 1, "response_source": "m1", "category": "generic", "gpt4_score": [3, 4, 4],
         "instruction": _grading_prompt("How do I relax?", "Breathe slowly.")},
        {"idx": 81, "response_source": "m2", "category": "writing", "gpt4_score": ["5", "5", "4"],
         "instruction": _grading_prompt(dialogue, "Turn two answer.")},
    ])
    a, b = load_dataset("prometheus-vicuna", src)
    assert isinstance(a, RatingRecord) and (a.prompt, a.response) == ("How do I relax?", "Breathe slowly.")
    assert a.score == pytest.approx(11 / 3)  # (3 + 4 + 4) / 3
    assert b.score == pytest.approx(14 / 3)  # (5 + 5 + 4) / 3, from strings
    assert a.subset == "m1" and a.meta["rubric"].startswith("[Is it good?]")
    assert a.meta["reference_answer"] == "Ref answer."
    assert b.prompt == [{"role": "user", "content": "First q"}, {"role": "assistant", "content": "First a"},
                        {"role": "user", "content": "Second q"}]
    _json(tmp_path / "vicuna_eval.json", [{"idx": 1, "gpt4_score": [3], "instruction": "no template"}])
    with pytest.raises(DataError, match=r"vicuna_eval\.json:1: instruction: not a Prometheus"):
        load_dataset("prometheus-vicuna", tmp_path)
    _json(tmp_path / "vicuna_eval.json", [{"idx": 1, "gpt4_score": [3, 9], "instruction": _grading_prompt("q", "r")}])
    with pytest.raises(DataError, match=r"vicuna_eval\.json:1: gpt4_score\[1\]: expected a score 1-5"):
        load_dataset("prometheus-vicuna", tmp_path)


def test_mt_bench_first_and_second_turns(tmp_path):
    qd = tmp_path / "mt_bench_questions"
    _jsonl(qd / "question.jsonl", [
        {"question_id": 81, "category": "writing", "turns": ["Write a post.", "Rewrite it."]},
        {"question_id": 101, "category": "reasoning", "turns": ["Race puzzle?", "And if last?"]},
        {"question_id": 102, "category": "reasoning", "turns": ["Other?", "More?"]},
    ])
    _jsonl(qd / "reference_answer_gpt-4.jsonl", [
        {"question_id": 101, "choices": [{"index": 0, "turns": ["Second place.", "x"]}]}])
    firsts = load_dataset("mt-bench", qd)
    assert [(r.id, r.prompt) for r in firsts] == [("81", "Write a post."), ("101", "Race puzzle?"), ("102", "Other?")]
    dialogue = ("Here is a previous dialogue between an assistant and an user. Generate a human preferable "
                "response by the assistant.\nUser: Write a post.\n\nAssistant:ChatGPT post.\n\nUser: Rewrite it."
                "\n\nAssistant: ")
    _json(tmp_path / "prometheus_ratings" / "mt_bench_eval.json", [
        {"idx": 81, "response_source": "chatgpt", "gpt4_score": [3, 3, 3],
         "instruction": _grading_prompt(dialogue, "r")}])
    loaded = convert_dataset("mt-bench-multiturn", qd)
    a, b = loaded.records
    assert isinstance(a, PromptRecord) and a.id == "81" and a.meta["first_answer"].startswith("chatgpt")
    assert a.prompt == [{"role": "user", "content": "Write a post."}, {"role": "assistant", "content": "ChatGPT post."},
                        {"role": "user", "content": "Rewrite it."}]
    assert b.id == "101" and b.prompt[1]["content"] == "Second place." and b.meta["first_answer"] == "gpt-4 reference"
    assert loaded.skipped == {"no first-turn answer": 1}  # 102 has neither


def test_mt_bench_bad_rows(tmp_path):
    q = _jsonl(tmp_path / "question.jsonl", [{"question_id": "81", "turns": ["a", "b"]}])
    with pytest.raises(DataError, match=rf"^{q}:1: question_id: expected an integer"):
        load_dataset("mt-bench", q)
    _jsonl(q, [{"question_id": 81, "turns": ["", "b"]}])
    with pytest.raises(DataError, match=rf"^{q}:1: turns\[0\]: empty"):
        load_dataset("mt-bench", q)


# -------------------------------------------------------------------------------------------- registry

def test_registry_and_paths(tmp_path):
    assert set(DATASETS) >= {"hh-harmless", "alpaca-eval", "alpaca-eval-outputs", "qa-feedback-edits",
                             "qa-feedback-pairs", "defacto-train", "defacto-val", "expertqa-edits",
                             "prometheus-mt-bench", "prometheus-vicuna", "mt-bench", "mt-bench-multiturn"}
    for info in DATASETS.values():
        assert info.kind in ("pair", "response", "edit", "rating", "prompt") and info.license
    with pytest.raises(FinealignError, match="unknown data set"):
        load_dataset("nope")
    with pytest.raises(DataError, match="not found"):
        load_dataset("hh-harmless", tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="expected test.jsonl in it"):
        load_dataset("hh-harmless", tmp_path)
    assert dataset_path("mt-bench", tmp_path) == tmp_path
    (tmp_path / "mt_bench_questions").mkdir()
    (tmp_path / "mt_bench_questions" / "question.jsonl").write_text("")
    assert dataset_path("mt-bench", tmp_path) == tmp_path / "mt_bench_questions" / "question.jsonl"
    assert dataset_path("mt-bench", tmp_path / "mt_bench_questions") == tmp_path / "mt_bench_questions/question.jsonl"


# ------------------------------------------------------------------------------- the real shared files

def _readme_counts(shared: Path) -> dict[str, int]:
    """Counts stated in the shared READMEs (or derived from the raw files by a rule independent of the adapters)."""
    raw = [json.loads(x) for x in (shared / "hh_rlhf_harmless_base_test/test.jsonl").open()]
    empty_chosen = sum(not x["chosen"].rsplit("\n\nAssistant:", 1)[1].strip() for x in raw)
    return {"hh-harmless": 2312 - empty_chosen, "alpaca-eval": 6440, "alpaca-eval-outputs": 19 * 805 - 1,
            "qa-feedback-edits": 500, "defacto-train": 701, "defacto-val": 341, "prometheus-mt-bench": 320,
            "prometheus-vicuna": 320, "mt-bench": 80, "mt-bench-multiturn": 80}


def test_shared_counts(shared_data):
    want = _readme_counts(shared_data)
    for name, n in want.items():
        assert len(load_dataset(name)) == n, name
    qa = load_dataset("qa-feedback-edits")
    assert sum(r.meta["changed"] for r in qa) == 494  # README: differs in 494/500
    raw_qa = json.loads((shared_data / "finegrained_rlhf_qa_feedback/dev_feedback.json").read_text())
    ties = sum(x["preference"].count(0) for x in raw_qa)
    assert len(load_dataset("qa-feedback-pairs")) == 6 * 500 - ties
    eqa = shared_data / "expertqa_revised_answers/expertqa_lfqa_val_test_union.jsonl"
    raw_e = [json.loads(x) for x in eqa.open()]
    assert len(load_dataset("expertqa-edits")) == sum(
        x["answer_string"] != x["revised_answer_string"] and bool(x["revised_answer_string"].strip()) for x in raw_e)


def test_shared_alpaca_eval_reproduces_leaderboard(shared_data):
    """README: mean(preference - 1) * 100 per model is the leaderboard win rate; recover it from the pairs."""
    board = alpaca_eval_leaderboard()
    raw = {}
    for f in (shared_data / "alpaca_eval_v2_gpt4turbo_annotations/annotations").glob("*.json"):
        for i, x in enumerate(json.loads(f.read_text())):
            raw[(x["generator_2"], i)] = x
    by: dict[str, list[float]] = {}
    for r in load_dataset("alpaca-eval"):
        x = raw[(r.subset, int(r.id.rsplit(":", 1)[1]))]
        if x["output_1"] == x["output_2"]:
            p2 = x["preference"] - 1
        else:  # P(output_2 preferred) from the pair alone
            p2 = r.p_chosen if r.chosen == x["output_2"] else 1 - r.p_chosen
        by.setdefault(r.subset, []).append(p2)
    assert len(by) == 8
    for model, ps in by.items():
        assert 100 * sum(ps) / len(ps) == pytest.approx(board[model], abs=1e-6), model


def test_shared_hh_invariants(shared_data):
    recs = load_dataset("hh-harmless")
    for r in recs:
        roles = [m["role"] for m in r.prompt]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(a != b for a, b in zip(roles, roles[1:]))  # alternating after merging
        assert r.chosen.strip() and r.rejected.strip()
    assert len({r.id for r in recs}) == len(recs)


def test_shared_prometheus_and_outputs(shared_data):
    for name in ("prometheus-mt-bench", "prometheus-vicuna"):
        recs = load_dataset(name)
        assert all(1 <= r.score <= 5 for r in recs) and len({r.subset for r in recs}) == 4
    mt = load_dataset("prometheus-mt-bench")
    assert all(isinstance(r.prompt, list) and len(r.prompt) == 3 for r in mt)
    outs = load_dataset("alpaca-eval-outputs")
    systems = {r.meta["system"] for r in outs}
    assert len(systems) == 19 and {r.prompt_id for r in outs} == {str(i) for i in range(805)}
    board = alpaca_eval_leaderboard()
    assert systems - {"gpt4_1106_preview"} <= set(board)
