"""Minimal-edit generation: template, minimality guard, the resumable edit job, local editor, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finealign.edits.editors import EditResult, Editor, LocalEditor, backoff_delay, make_editor
from finealign.edits.minimality import (OK, TOO_LARGE, UNCHANGED, MinimalityConfig, MinimalityStats, check_edit,
                                        guard)
from finealign.edits.run import EditJobConfig, dropped_path, failed_path, read_edit_inputs, run_edits
from finealign.edits.template import EDIT_TEMPLATE_V1, EditTemplate, get_template
from finealign.errors import DataError, FinealignError

from conftest import run_cli


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


PAIRS = [
    {"id": "p1", "prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "The capital of France is Lyon."},
    {"id": "p2", "prompt": [{"role": "user", "content": "Name a primary colour."}], "chosen": "Red.",
     "rejected": "Green is a primary colour of paint."},
    {"id": "p3", "prompt": "Say hi.", "chosen": "Hi!", "rejected": "  "},
    {"id": "p4", "prompt": "Two plus two?", "chosen": "4", "rejected": "Two plus two is five."},
]


# ----------------------------------------------------------------------------------------- template


def test_template_renders_prompt_and_response_verbatim_and_is_versioned():
    msgs = EDIT_TEMPLATE_V1.render([{"role": "user", "content": "Q?"}], "  The answer is 5.\n")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "user: Q?" in msgs[1]["content"] and "### Response\nThe answer is 5.\n" in msgs[1]["content"]
    assert msgs[1]["content"].endswith("### Corrected response\n")
    assert EDIT_TEMPLATE_V1.id == "finealign-edit-v1" and get_template("finealign-edit-v1") is EDIT_TEMPLATE_V1
    with pytest.raises(FinealignError, match="unknown edit template"):
        get_template("v99")
    with pytest.raises(ValueError, match="placeholder"):
        EditTemplate("v2", "", "no placeholders")


@pytest.mark.parametrize("reply, expected", [
    ("  The answer is 4.  ", "The answer is 4."),
    ("Corrected response: The answer is 4.", "The answer is 4."),
    ("### Corrected response\nThe answer is 4.", "The answer is 4."),
    ("```\nThe answer is 4.\n```", "The answer is 4."),
    ("", ""), (None, ""), ("   \n", ""),
])
def test_template_extract(reply, expected):
    assert EDIT_TEMPLATE_V1.extract(reply) == expected


# ----------------------------------------------------------------------------------------- minimality


def test_minimality_hand_worked():
    # 1 of 6 words replaced: 1/6 = 0.1667 <= 0.5 -> ok
    v = check_edit("the cat sat on the mat", "the dog sat on the mat")
    assert v.status == OK and v.ratio == pytest.approx(1 / 6)
    # 1 replaced + 1 inserted ("red") over 6 words: 2/6 = 0.333 -> ok
    assert check_edit("the cat sat on the mat", "the dog sat on the red mat").ratio == pytest.approx(2 / 6)
    # identical, and whitespace-only changes: nothing to learn from -> unchanged, ratio 0
    assert check_edit("a b c", "a b c") == (UNCHANGED, 0.0)
    assert check_edit("a b c", "a  b\nc ").status == UNCHANGED
    # pure insertion of 4 words after 3: 4/3 = 1.333 > 0.5 -> too large
    v = check_edit("the cat sat", "the cat sat on the mat today")
    assert v.status == TOO_LARGE and v.ratio == pytest.approx(4 / 3)
    # 3 of 4 words replaced: 0.75 > 0.5; with max_ratio 0.8 it passes
    assert check_edit("one two three four", "one six seven eight").status == TOO_LARGE
    assert check_edit("one two three four", "one six seven eight", max_ratio=0.8).status == OK


def test_guard_flag_keeps_all_drop_keeps_ok_and_counts():
    pairs = [("a b c d", "a b c e"),  # 1/4 ok
             ("a b c d", "a b c d"),  # unchanged
             ("a b c d", "w x y z")]  # 4/4 too large
    keep, verdicts, stats = guard(pairs, MinimalityConfig(0.5, "flag"))
    assert keep == [0, 1, 2] and [v.status for v in verdicts] == [OK, UNCHANGED, TOO_LARGE]
    assert (stats.total, stats.ok, stats.unchanged, stats.too_large, stats.violations) == (3, 1, 1, 1, 2)
    # ratios over changed edits only: mean (0.25 + 1.0) / 2 = 0.625
    assert stats.ratio_mean == pytest.approx(0.625) and stats.ratio_median == pytest.approx(0.625)
    keep, _, _ = guard(pairs, MinimalityConfig(0.5, "drop"))
    assert keep == [0]
    assert MinimalityStats.from_verdicts([]).to_dict()["ratio_mean"] is None
    with pytest.raises(ValueError):
        MinimalityConfig(0.0)
    with pytest.raises(ValueError):
        MinimalityConfig(0.5, "ignore")


def test_backoff_delay_hand_worked():
    # base 0.5, cap 8: 0.5 * 2**attempt = 0.5, 1, 2, 4, then 8 (=16 capped)
    assert [backoff_delay(a, 0.5, 8) for a in range(5)] == [0.5, 1, 2, 4, 8]
    assert backoff_delay(0, 0.5, 8, retry_after=3) == 3  # the server's Retry-After wins
    assert backoff_delay(0, 0.5, 8, retry_after=100) == 8  # but is capped


# ----------------------------------------------------------------------------------------- inputs


def test_read_edit_inputs_kinds_and_errors(tmp_path):
    items, empty = read_edit_inputs(_jsonl(tmp_path / "p.jsonl", PAIRS))
    assert [i.id for i in items] == ["p1", "p2", "p4"] and empty == 1
    assert items[0].original == PAIRS[0]["rejected"] and items[0].source == "rejected"
    items, empty = read_edit_inputs(_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "q", "completion": "an answer"}, {"prompt": "q2", "completion": ""}]))
    assert [(i.id, i.source) for i in items] == [("1", "completion")] and empty == 1
    items, _ = read_edit_inputs(_jsonl(tmp_path / "e.jsonl", [{"prompt": "q", "original": "x y", "edited": "x z"}]))
    assert items[0].original == "x y" and items[0].meta["reference"] == "x z"
    bad = [
        ([PAIRS[0], PAIRS[0]], r"b0\.jsonl:2: id: duplicate id 'p1' \(first at line 1\)"),
        ([PAIRS[0], {"prompt": "q", "completion": "c"}], r"b1\.jsonl:2: rejected: missing"),
        ([{"prompt": "q", "completion": "c", "label": True}], r"b2\.jsonl:1: prompt: expected pairs"),
        ([{"prompt": "", "chosen": "a", "rejected": "b"}], r"b3\.jsonl:1: prompt: empty"),
        ([{"prompt": "q", "chosen": "a", "rejected": 3}], r"b4\.jsonl:1: rejected: expected a string"),
    ]
    for i, (rows, msg) in enumerate(bad):
        with pytest.raises(DataError, match=msg):
            read_edit_inputs(_jsonl(tmp_path / f"b{i}.jsonl", rows))
    (tmp_path / "m.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"m\.jsonl:2: malformed JSON"):
        read_edit_inputs(tmp_path / "m.jsonl")


# ----------------------------------------------------------------------------------------- job


class ScriptedEditor(Editor):
    """Answers from a dict id -> reply (None = an error); raises KeyboardInterrupt after ``stop_after`` results."""

    name = "scripted"

    def __init__(self, replies: dict, stop_after: int | None = None):
        self.replies, self.stop_after, self.seen = replies, stop_after, []

    def edit(self, requests):
        for n, r in enumerate(requests):
            if self.stop_after is not None and n == self.stop_after:
                raise KeyboardInterrupt
            self.seen.append(r.id)
            reply = self.replies.get(r.id)
            yield (EditResult(r.id, None, "error", "boom") if reply is None else self._result(r, reply))


def test_run_edits_flag_failures_resume(tmp_path):
    inp = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "edits.jsonl"
    replies = {"p1": "The capital of France is Paris.", "p2": "", "p4": None}
    stats = run_edits(ScriptedEditor(replies), inp, out)
    assert (stats.inputs, stats.skipped_empty, stats.attempted, stats.written, stats.failed) == (4, 1, 3, 1, 2)
    assert stats.failure_reasons == {"empty": 1, "error": 1}
    rec = _read(out)[0]
    assert rec["original"] == PAIRS[0]["rejected"] and rec["edited"] == replies["p1"]
    # "Lyon" -> "Paris": 1 of 7 units (The, capital, of, France, is, Lyon, ".") = 0.1429
    assert rec["meta"]["minimality"] == OK and rec["meta"]["edit_ratio"] == pytest.approx(1 / 7, abs=1e-4)
    assert rec["meta"]["template"] == "finealign-edit-v1" and rec["meta"]["source"] == "rejected"
    assert sorted(f["id"] for f in _read(failed_path(out))) == ["p2", "p4"]
    # rerun: only the failed ones are sent again; now they succeed; the failed file goes away
    ed = ScriptedEditor({"p2": "Red is a primary colour of paint.", "p4": "Two plus two is five."})
    stats = run_edits(ed, inp, out)
    assert sorted(ed.seen) == ["p2", "p4"] and stats.retried_failed == 2 and stats.done_before == 1
    assert stats.this_run.unchanged == 1 and stats.total.total == 3 and stats.total.ok == 2
    assert not failed_path(out).exists() and stats.failed_file is None
    assert sorted(r["id"] for r in _read(out)) == ["p1", "p2", "p4"]
    # a third run has nothing to do
    ed = ScriptedEditor({})
    assert run_edits(ed, inp, out).attempted == 0 and ed.seen == []


def test_run_edits_drop_and_limit(tmp_path):
    inp = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "edits.jsonl"
    replies = {"p1": "Completely different words here now entirely.", "p2": "Red is a primary colour of paint."}
    cfg = EditJobConfig(MinimalityConfig(0.5, "drop"), limit=2)
    stats = run_edits(ScriptedEditor(replies), inp, out, cfg)
    assert (stats.selected, stats.written, stats.dropped) == (2, 1, 1)
    assert [r["id"] for r in _read(out)] == ["p2"]
    dropped = _read(dropped_path(out))
    assert [r["id"] for r in dropped] == ["p1"] and dropped[0]["meta"]["minimality"] == TOO_LARGE
    # dropped edits are done: a rerun without limit sends only p4
    ed = ScriptedEditor({"p4": "Two plus two is four."})
    stats = run_edits(ed, inp, out, EditJobConfig(MinimalityConfig(0.5, "drop")))
    assert ed.seen == ["p4"] and stats.total.total == 3 and stats.total.too_large == 1


def test_interrupted_run_keeps_finished_work(tmp_path):
    inp = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "edits.jsonl"
    replies = {"p1": "The capital of France is Paris.", "p2": None, "p4": "Two plus two is four."}
    with pytest.raises(KeyboardInterrupt):
        run_edits(ScriptedEditor(replies, stop_after=2), inp, out)
    assert [r["id"] for r in _read(out)] == ["p1"]  # finished before the interrupt: kept
    assert [f["id"] for f in _read(failed_path(out))] == ["p2"]  # failure recorded too
    ed = ScriptedEditor({**replies, "p2": "Red is a primary colour of paint."})
    stats = run_edits(ed, inp, out)
    assert sorted(ed.seen) == ["p2", "p4"] and stats.written == 2
    assert sorted(r["id"] for r in _read(out)) == ["p1", "p2", "p4"]


def test_output_must_be_jsonl_and_differ_from_input(tmp_path):
    inp = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    with pytest.raises(FinealignError, match="must be a .jsonl"):
        run_edits(ScriptedEditor({}), inp, tmp_path / "x.json")
    with pytest.raises(FinealignError, match="must differ"):
        run_edits(ScriptedEditor({}), inp, inp)


# ----------------------------------------------------------------------------------------- local editor


def test_local_editor_tiny_matches_generation_and_counts_context(tiny):
    from finealign.edits.editors import EditRequest
    from finealign.generation import generate_batch

    ed = LocalEditor(tiny, max_new_tokens=8, batch_size=2)
    reqs = [EditRequest("a", "Q?", "The answer is five."), EditRequest("b", "Q2?", "Paris is in Spain."),
            EditRequest("long", "Q3?", "word " * 1200)]  # ~1200+ tokens > the tiny model's 1024 window
    res = {r.id: r for r in ed.edit(reqs)}
    assert res["long"].reason == "context" and "context window of 1024" in res["long"].error
    # greedy, so the edit equals a direct greedy generation of the rendered template
    direct = generate_batch(*tiny, [EDIT_TEMPLATE_V1.render("Q?", "The answer is five.")], temperature=0,
                            max_new_tokens=8)
    expected = EDIT_TEMPLATE_V1.extract(direct[0][0])
    assert (res["a"].edited or "") == expected


def test_cli_edit_local_tiny_end_to_end(tmp_path):
    inp = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "edits.jsonl"
    rc = run_cli(["edit", inp, out, "--editor", "local:tiny-random", "--max-new-tokens", "12", "-q"])
    assert rc == 0
    recs = _read(out)
    failed = _read(failed_path(out)) if failed_path(out).exists() else []
    assert len(recs) + len(failed) == 3  # p3 has an empty rejected response: skipped, not sent
    for r in recs:
        src = next(p for p in PAIRS if p["id"] == r["id"])
        assert r["original"] == src["rejected"] and r["meta"]["editor"] == "local:tiny-random"
        assert r["meta"]["minimality"] == check_edit(r["original"], r["edited"]).status
    # rerun: nothing new is written
    assert run_cli(["edit", inp, out, "--editor", "local:tiny-random", "--max-new-tokens", "12", "-q"]) == 0
    assert len(_read(out)) == len(recs)


def test_cli_edit_bad_input(tmp_path, capsys):
    out = tmp_path / "edits.jsonl"
    bad = _jsonl(tmp_path / "bad.jsonl", [PAIRS[0], {"prompt": "q", "chosen": "a"}])
    assert run_cli(["edit", bad, out, "--editor", "local:tiny-random"]) == 1
    assert "bad.jsonl:2: rejected: missing" in capsys.readouterr().err and not out.exists()
    inp = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    for args, msg in [(["--editor", "tiny-random"], "expected local:MODEL_SPEC or openai:MODEL"),
                      (["--editor", "openai:m", "--base-url", "ftp://x"], "--base-url: expected http"),
                      (["--editor", "local:tiny-random", "--on-violation", "ignore"], "on_violation"),
                      (["--editor", "local:tiny-random", "--max-ratio", "0"], "max_ratio")]:
        assert run_cli(["edit", inp, out] + args) == 1
        assert msg in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(FinealignError, match="base-url applies to openai"):
        make_editor("local:tiny-random", base_url="http://127.0.0.1:1/v1")


def test_openai_editor_needs_key_without_base_url(monkeypatch):
    for env in ("FINEALIGN_EDITOR_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(env, raising=False)
    with pytest.raises(FinealignError, match="no API key"):
        make_editor("openai:gpt-4o-mini")


# ----------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_default_model_as_local_editor(smol, tmp_path):
    inp = _jsonl(tmp_path / "pairs.jsonl", [PAIRS[0], PAIRS[3]])
    out = tmp_path / "edits.jsonl"
    stats = run_edits(LocalEditor(smol, max_new_tokens=24, batch_size=2), inp, out)
    recs = _read(out)
    assert stats.written == len(recs) and stats.written + stats.failed == 2
    for r in recs:
        assert r["meta"]["minimality"] in (OK, UNCHANGED, TOO_LARGE) and r["edited"].strip()
    t = stats.total
    assert t.total == len(recs) == t.ok + t.unchanged + t.too_large
