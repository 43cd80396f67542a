"""Readers (JSONL/JSON/CSV/Parquet), bad-input messages, atomic writers and the resumable appender."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from finealign.data.io import JsonlAppender, iter_objects, read_records, write_json, write_jsonl, write_text_atomic
from finealign.data.records import (
    EditRecord,
    KTORecord,
    PairRecord,
    PromptRecord,
    RatingRecord,
    ResponseRecord,
    detect_kind,
)
from finealign.errors import DataError

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"}]

EXAMPLES = [
    PromptRecord(prompt="Write a haiku.", id="p1", meta={"src": "test"}),
    PromptRecord(prompt=CHAT, id="p2"),
    ResponseRecord(prompt="Q?", completion="A.", id="r1", prompt_id="p1", sample=2),
    PairRecord(prompt=CHAT, chosen="Paris.", rejected="Lyon.", id="x1", subset="geo", p_chosen=0.75),
    KTORecord(prompt="Q?", completion="Bad answer", label=False, id="k1"),
    EditRecord(prompt="Q?", original="The sky is green.", edited="The sky is blue.", meta={"changed": True}),
    EditRecord(prompt="Q?", original="All wrong.", edited=""),  # a full deletion is a valid edit
    RatingRecord(prompt="Q?", response="A.", score=3.5, subset="m1"),
]


def _lines(path: Path, objs: list) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("rec", EXAMPLES, ids=lambda r: f"{r.kind}-{r.id}")
def test_jsonl_round_trip_every_kind(tmp_path, rec):
    p = write_jsonl(tmp_path / "r.jsonl", [rec])
    (back,) = read_records(p)
    assert type(back) is type(rec) and back == rec
    assert detect_kind(json.loads(p.read_text())) == rec.kind


def test_json_array_and_data_object(tmp_path):
    objs = [r.to_obj() for r in EXAMPLES[3:4] * 3]
    write_json(tmp_path / "a.json", objs)
    write_json(tmp_path / "b.json", {"data": objs})
    assert read_records(tmp_path / "a.json") == read_records(tmp_path / "b.json") == [EXAMPLES[3]] * 3


def test_csv_reader_chat_prompt_numbers_and_empty_optional_cells(tmp_path):
    p = tmp_path / "r.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "chosen", "rejected", "p_chosen", "id", "meta"])
        w.writerow([json.dumps(CHAT), "Paris.", "Lyon.", "0.75", "x1", ""])
        w.writerow(["Plain?", "multi\nline", "no", "", "", '{"a": 1}'])
    a, b = read_records(p)
    assert a.prompt == CHAT and a.p_chosen == 0.75 and a.id == "x1" and a.meta == {}
    assert b.chosen == "multi\nline" and b.p_chosen is None and b.id is None and b.meta == {"a": 1}
    k = tmp_path / "k.csv"
    k.write_text("prompt,completion,label,sample\nQ,A,true,3\n", encoding="utf-8")
    (kr,) = read_records(k, "kto")
    assert kr.label is True
    (rr,) = read_records(k, "response")
    assert rr.sample == 3


def test_parquet_reader(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    objs = [r.to_obj() for r in (EXAMPLES[5], EXAMPLES[5])]
    pq.write_table(pa.Table.from_pylist(objs), tmp_path / "e.parquet")
    assert read_records(tmp_path / "e.parquet") == [EXAMPLES[5], EXAMPLES[5]]


# ------------------------------------------------------------------------------------- bad input: JSONL

GOOD_PAIR = {"prompt": "Q?", "chosen": "yes", "rejected": "no"}


@pytest.mark.parametrize("bad,line,field,problem", [
    ('{"prompt": "Q?", "chosen": "yes", "rejected": ', 2, None, "malformed JSON"),
    ({"prompt": "Q?", "chosen": "yes"}, 2, "rejected", "missing"),
    ({"prompt": 5, "chosen": "yes", "rejected": "no"}, 2, "prompt",
     "expected a string or a list of messages, got int"),
    ({"prompt": "Q?", "chosen": ["a", "b"], "rejected": "no"}, 2, "chosen", "expected a string, messages or text blocks, got list"),
    ({"prompt": "Q?", "chosen": "yes", "rejected": "no", "p_chosen": 1.5}, 2, "p_chosen", "probability"),
    ({"prompt": "Q?", "chosen": "yes", "rejected": "no", "p_chosen": "high"}, 2, "p_chosen", "expected a number"),
    ({"prompt": "   ", "chosen": "yes", "rejected": "no"}, 2, "prompt", "empty"),
    ({"prompt": [], "chosen": "yes", "rejected": "no"}, 2, "prompt", "empty message list"),
    ({"prompt": [{"role": "user", "content": ""}], "chosen": "y", "rejected": "n"}, 2, "prompt[0].content", "empty"),
    ({"prompt": [{"role": "bot", "content": "x"}], "chosen": "y", "rejected": "n"}, 2, "prompt[0].role",
     "expected one"),
    ({"prompt": "Q?", "chosen": "yes", "rejected": "no", "meta": [1]}, 2, "meta", "expected an object"),
    ("[1, 2]", 2, None, "expected a JSON object, got list"),
])
def test_jsonl_bad_record_names_path_line_field(tmp_path, bad, line, field, problem):
    p = _lines(tmp_path / "d.jsonl", [GOOD_PAIR, bad, GOOD_PAIR])
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    prefix = f"{p}:{line}: {field}: " if field else f"{p}:{line}: "
    assert msg.startswith(prefix), msg
    assert problem in msg
    assert (e.value.line, e.value.field) == (line, field)


@pytest.mark.parametrize("kind,obj,field", [
    ("rating", {"prompt": "Q", "response": "A", "score": "five"}, "score"),
    ("rating", {"prompt": "Q", "response": "A", "score": float("nan")}, "score"),
    ("rating", {"prompt": "Q", "response": "A"}, "score"),
    ("kto", {"prompt": "Q", "completion": "A", "label": "maybe"}, "label"),
    ("edit", {"prompt": "Q", "original": "x"}, "edited"),
    ("response", {"prompt": "Q", "completion": "A", "sample": 1.5}, "sample"),
    ("prompt", {"id": "3"}, "prompt"),
])
def test_missing_mistyped_or_empty_field_per_kind(tmp_path, kind, obj, field):
    p = tmp_path / "k.jsonl"
    p.write_text(json.dumps(obj, allow_nan=True) + "\n")
    with pytest.raises(DataError, match=rf"^{p}:1: {field}: "):
        read_records(p, kind)


def test_non_utf8_bytes_jsonl_json_csv(tmp_path):
    good = json.dumps(GOOD_PAIR).encode()
    p = tmp_path / "d.jsonl"
    p.write_bytes(good + b"\n" + b'{"prompt": "caf\xe9", "chosen": "y", "rejected": "n"}\n')
    with pytest.raises(DataError, match=rf"^{p}:2: not valid UTF-8 \(byte 0xe9"):
        read_records(p)
    j = tmp_path / "d.json"
    j.write_bytes(b'[\n' + good + b',\n{"prompt": "\xff"}\n]\n')
    with pytest.raises(DataError, match=rf"^{j}:3: not valid UTF-8 \(byte 0xff at column 13\)"):
        read_records(j)  # '{"prompt": "' is 12 bytes, so the bad byte is column 13 of line 3
    c = tmp_path / "d.csv"
    c.write_bytes(b"prompt,chosen,rejected\nQ,y,n\nQ,\xc3\x28,n\n")
    with pytest.raises(DataError, match=rf"^{c}:3: not valid UTF-8 \(byte 0xc3 at column 3\)"):
        read_records(c)


def test_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_PAIR).encode() + b"\n")
    assert read_records(p)[0].chosen == "yes"


def test_json_and_csv_bad_records(tmp_path):
    j = tmp_path / "d.json"
    j.write_text('[{"prompt": "Q", "chosen": "a", "rejected": "b"},\n {"prompt": "Q", "chosen": "a"}]')
    with pytest.raises(DataError, match=rf"^{j}:2: rejected: missing"):  # JSON: the record's 1-based index
        read_records(j)
    j.write_text('[{"prompt": "Q",\n "chosen": }]')
    with pytest.raises(DataError, match=rf"^{j}:2: malformed JSON"):
        read_records(j)
    c = tmp_path / "d.csv"
    # line 1 header, line 2-3 one record with a quoted newline, line 4 an empty prompt cell
    c.write_text('prompt,chosen,rejected\nQ,"two\nlines",n\n,y,n\n', encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{c}:4: prompt: empty"):
        read_records(c)
    c.write_text("prompt,chosen,rejected\nQ,y,n,extra\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{c}:2: 4 cells but the header has 3 columns"):
        read_records(c)
    c.write_text("prompt,chosen\nQ,y\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{c}:2: rejected: missing"):
        read_records(c, "pair")


def test_parquet_missing_column_and_bad_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "Q", "chosen": "a"}]), tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"m\.parquet:1: rejected: missing"):
        read_records(tmp_path / "m.parquet", "pair")
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"x\.parquet: cannot read Parquet"):
        read_records(tmp_path / "x.parquet")


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        list(iter_objects(tmp_path / "nope.jsonl"))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        list(iter_objects(tmp_path / "a.txt"))


def test_kind_detected_from_first_record_applies_to_all(tmp_path):
    p = _lines(tmp_path / "d.jsonl", [GOOD_PAIR, {"prompt": "Q", "completion": "A"}])
    with pytest.raises(DataError, match=rf"^{p}:2: chosen: missing"):
        read_records(p)


# --------------------------------------------------------------------------------------- atomic writers

def _exploding(n_ok: int, exc=RuntimeError):
    for i in range(n_ok):
        yield {"i": i, "text": "x" * 10_000}  # large enough to reach the disk before the failure
    raise exc("interrupted")


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_write_jsonl_interrupted_leaves_no_file_and_no_temp(tmp_path, exc):
    out = tmp_path / "out.jsonl"
    with pytest.raises(exc):
        write_jsonl(out, _exploding(200, exc))
    assert list(tmp_path.iterdir()) == []


def test_write_jsonl_interrupted_keeps_previous_file(tmp_path):
    out = write_jsonl(tmp_path / "out.jsonl", [{"i": 0}])
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        write_jsonl(out, _exploding(50))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_text_atomic_failure_at_rename(tmp_path, monkeypatch):
    out = tmp_path / "t.txt"
    out.write_text("old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_text_atomic(out, "new text")
    with pytest.raises(OSError):
        write_json(tmp_path / "j.json", {"a": 1})
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_written_files_get_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        p = write_jsonl(tmp_path / "m.jsonl", [{"a": 1}])
    finally:
        os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o644  # 0o666 & ~0o022, not mkstemp's 0o600


# ------------------------------------------------------------------------------------------- appender

def _keyed(i: int) -> dict:
    return {"id": f"k{i}", "completion": f"answer {i}"}


def test_appender_resumes_and_skips_done_keys(tmp_path):
    p = tmp_path / "a.jsonl"
    with JsonlAppender(p, key=lambda o: o["id"]) as app:
        for i in range(3):
            app.append(_keyed(i))
    with JsonlAppender(p, key=lambda o: o["id"]) as app:
        assert app.done == {"k0", "k1", "k2"} and "k1" in app
        for i in range(5):  # a rerun over all 5 items writes only the missing ones
            if f"k{i}" not in app:
                app.append(_keyed(i))
    ids = [o["id"] for _, o in iter_objects(p)]
    assert ids == ["k0", "k1", "k2", "k3", "k4"]


@pytest.mark.parametrize("torn", [b'{"id": "k3", "compl', b'{"id": "k3"', b"\xe2\x80"])
def test_appender_drops_torn_last_line(tmp_path, torn):
    p = tmp_path / "a.jsonl"
    write_jsonl(p, [_keyed(i) for i in range(3)])
    good = p.read_bytes()
    with open(p, "ab") as f:
        f.write(torn)  # what a killed run leaves behind
    with JsonlAppender(p, key=lambda o: o["id"]) as app:
        assert app.done == {"k0", "k1", "k2"}
        assert p.read_bytes() == good
        app.append(_keyed(3))
    assert [o["id"] for _, o in iter_objects(p)] == ["k0", "k1", "k2", "k3"]


def test_appender_keeps_complete_last_record_without_newline(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(_keyed(0)) + "\n\n" + json.dumps(_keyed(1)))  # a blank line, no final newline
    with JsonlAppender(p, key=lambda o: o["id"]) as app:
        assert app.done == {"k0", "k1"}
        app.append(_keyed(2))
    assert [o["id"] for _, o in iter_objects(p)] == ["k0", "k1", "k2"]


def test_appender_refuses_damage_before_the_end(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(_keyed(0)) + "\nGARBAGE\n" + json.dumps(_keyed(2)) + "\n")
    before = p.read_bytes()
    with pytest.raises(DataError, match=rf"^{p}:2: cannot resume"):
        JsonlAppender(p, key=lambda o: o["id"])
    assert p.read_bytes() == before  # nothing deleted
    p.write_text(json.dumps({"no_id": 1}) + "\n")
    with pytest.raises(DataError, match=rf"^{p}:1: cannot resume: no key"):
        JsonlAppender(p, key=lambda o: o["id"])


def test_appender_survives_a_killed_process(tmp_path):
    """A child process appends, then dies mid-line (os._exit, no cleanup); the rerun completes."""
    import subprocess
    import sys

    p = tmp_path / "a.jsonl"
    code = (
        "import json, os, sys\n"
        "from finealign.data.io import JsonlAppender\n"
        f"app = JsonlAppender({str(p)!r}, key=lambda o: o['id'])\n"
        "for i in range(4):\n"
        "    app.append({'id': f'k{i}', 'completion': f'answer {i}'})\n"
        "app._f.write('{\"id\": \"k4\", \"compl'); app._f.flush()\n"
        "os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    with JsonlAppender(p, key=lambda o: o["id"]) as app:
        for i in range(6):
            if f"k{i}" not in app:
                app.append(_keyed(i))
    ids = [o["id"] for _, o in iter_objects(p)]
    assert ids == [f"k{i}" for i in range(6)]


def test_reading_data_does_not_load_torch():
    """Reading and checking records (what every CLI verb and the web app do first) must not pay torch's
    import: the data layer loads it only when it pads token ids."""
    import subprocess
    import sys

    code = ("import sys, finealign.data.io, finealign.data.records, finealign.data.chat; "
            "sys.exit(int('torch' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_json_writers_write_strict_json(tmp_path):
    """An undefined measure (NaN, e.g. an accuracy over no pairs) or an infinity is written as null, never as the
    non-JSON NaN / Infinity that strict parsers reject; finite values are untouched."""
    from finealign.data.io import to_json

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))

    obj = {"acc": float("nan"), "ci": [float("nan"), float("inf")], "n": 0, "x": 0.25, "deep": [{"y": float("-inf")}]}
    want = {"acc": None, "ci": [None, None], "n": 0, "x": 0.25, "deep": [{"y": None}]}
    assert strict(to_json(obj)) == want
    assert strict(write_json(tmp_path / "a.json", obj).read_text()) == want
    write_jsonl(tmp_path / "a.jsonl", [obj, {"x": 1.5}])
    assert [strict(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()] == [want, {"x": 1.5}]
    with JsonlAppender(tmp_path / "b.jsonl", key=lambda o: o["n"]) as app:
        app.append(obj)
    assert strict((tmp_path / "b.jsonl").read_text()) == want
