"""The annotation app: the JSON API against the real app and a real SQLite file, assignment and overlap,
export read back by the token RM's data reader, stats, hostile data, size limits, concurrency on
loopback, and a crash (SIGKILL) and restart of the real ``finealign annotate serve`` process.

The browser test (Playwright + Chromium) is in ``test_annotate_browser.py``; it uses the helpers below.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import REPO, run_cli, serve_root
from finealign.core.align import diff_char_spans
from finealign.edits.minimality import check_edit
from finealign.errors import DataError, FinealignError
from finealign.serve.annotate import AnnotationStore, Submission, compute_stats, create_app, export_records
from finealign.serve.annotate.results import edit_unit_set, jaccard

# ---------------------------------------------------------------------------------------------- helpers

HOSTILE = [
    {"id": "h1", "prompt": "<script>window.__pwned=1</script> What is 2+2?",
     "chosen": "2+2 is 4.", "rejected": "<img src=x onerror=\"window.__pwned=1\"> 2+2 is 5."},
    {"id": "\"><svg onload=window.__pwned=1>", "prompt": [
        {"role": "system", "content": "\" onmouseover=\"window.__pwned=1\" x=\""},
        {"role": "user", "content": "Link? <a href=\"javascript:window.__pwned=1\">click</a>"}],
     "chosen": "javascript:window.__pwned=1", "rejected": "Visit javascript:alert(document.cookie) now </textarea><b>x</b>"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_pairs(n: int) -> list[dict]:
    return [{"id": f"q{i}", "prompt": f"Question {i}: name a colour.",
             "chosen": f"Blue is a colour, number {i}.", "rejected": f"Blue is a fruit, number {i}, I think."}
            for i in range(n)]


def make_edits(n: int) -> list[dict]:
    """Records as ``finealign edit`` writes them (prompt/original/edited + meta)."""
    return [{"id": f"e{i}", "prompt": f"Prompt {i}", "original": f"The sun orbits the earth every {i} days.",
             "edited": f"The earth orbits the sun every {i} days.",
             "meta": {"editor": "local:tiny-random", "edit_ratio": 0.4, "minimality": "ok"}} for i in range(n)]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


serve_in_thread = serve_root  # the loopback server of conftest (root URL)


def db_rows(db: Path, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql, args).fetchall()


@pytest.fixture()
def project(tmp_path):
    """A database with 3 pairs and annotators alice and bob: (store, client, {name: token})."""
    store = AnnotationStore(tmp_path / "ann.sqlite")
    store.import_file(write_jsonl(tmp_path / "pairs.jsonl", make_pairs(3)))
    tokens = {n: store.add_annotator(n) for n in ("alice", "bob")}
    return store, TestClient(create_app(store)), tokens


# ---------------------------------------------------------------------------------------------- API


def test_a_token_is_required_for_every_read_and_write(project):
    store, c, tok = project
    routes = [("GET", "/api/me", None), ("GET", "/api/next", None), ("GET", "/api/items/1", None),
              ("GET", "/api/history", None), ("POST", "/api/diff", {"item_id": 1, "edited": "x"}),
              ("POST", "/api/submit", {"item_id": 1, "edited": "x"})]
    for method, path, body in routes:
        for headers in ({}, bearer("not-a-token"), {"Authorization": tok["alice"]}):  # no "Bearer " prefix
            r = c.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers)
    assert db_rows(store.path, "SELECT COUNT(*) FROM assignments") == [(0,)]  # nothing was handed out
    page = c.get("/")
    assert page.status_code == 200 and "Blue is" not in page.text  # the page itself carries no data
    assert c.get("/api/health").json() == {"ok": True}


def test_edit_submit_resubmit_replaces_and_export_reads_back(project, tmp_path, capsys):
    from finealign.data.io import read_records
    from finealign.models import load_tokenizer
    from finealign.models.token_rm_data import build_pair_examples, load_edit_source

    store, c, tok = project
    h = bearer(tok["alice"])
    item = c.get("/api/next", headers=h).json()["item"]
    assert item["key"] == "q0" and item["mode"] == "edit"
    edited = "Blue is a colour, number 0, I think."
    first = c.post("/api/submit", headers=h, json={"item_id": item["id"], "edited": "Blue is a fruit, number 0.",
                                                   "seconds": 2.5})
    assert first.status_code == 200
    again = c.post("/api/submit", headers=h, json={"item_id": item["id"], "edited": edited, "seconds": 4.0})
    assert again.status_code == 200
    rows = db_rows(store.path, "SELECT edited, seconds, submissions, original FROM annotations")
    assert rows == [(edited, 6.5, 2, "Blue is a fruit, number 0, I think.")]  # replaced; 2.5 + 4.0 seconds
    assert c.get("/api/next", headers=h).json()["item"]["key"] == "q1"  # the submitted item is not served again

    out = tmp_path / "edits.jsonl"
    assert run_cli(["annotate", "export", out, "--db", store.path]) == 0
    assert json.loads(capsys.readouterr().out)["exported"] == 1
    (rec,) = read_records(out, "edit")
    assert (rec.prompt, rec.original, rec.edited, rec.id) == ("Question 0: name a colour.",
                                                              "Blue is a fruit, number 0, I think.", edited, "q0@alice")
    assert rec.meta["annotator"] == "alice" and rec.meta["seconds"] == 6.5 and rec.meta["mode"] == "edit"
    assert rec.meta["flags"] == [] and rec.meta["worse"] == "rejected" and rec.meta["submissions"] == 2
    # the token RM's own reader takes the file unchanged; "fruit" -> "colour" labels tokens on both sides
    examples, stats = build_pair_examples(load_edit_source(str(out)), load_tokenizer("tiny-random"), 256)
    assert stats.kept == 1 and any(examples[0].edited.changed) and any(examples[0].original.changed)


def test_flip_edits_the_chosen_response(project):
    store, c, tok = project
    h = bearer(tok["bob"])
    item = c.get("/api/next", headers=h).json()["item"]
    r = c.post("/api/submit", headers=h, json={"item_id": item["id"], "worse": "chosen",
                                               "edited": "Blue is a colour, number 0!"})
    assert r.status_code == 200 and r.json()["annotation"]["original"] == item["chosen"]
    (rec,), _ = export_records(store)
    assert rec["original"] == item["chosen"] and rec["meta"]["flipped"] is True


def test_refusals(project):
    store, c, tok = project
    h = bearer(tok["alice"])
    item = c.get("/api/next", headers=h).json()["item"]
    same = item["rejected"].replace(" ", "  ")  # whitespace only: no token label would change
    r = c.post("/api/submit", headers=h, json={"item_id": item["id"], "edited": same})
    assert r.status_code == 422 and "nothing changed" in r.json()["detail"]
    assert c.post("/api/submit", headers=h, json={"item_id": 3, "edited": "x"}).status_code == 403  # not assigned
    assert c.get("/api/items/3", headers=h).status_code == 403
    assert c.post("/api/diff", headers=h, json={"item_id": 3, "edited": "x"}).status_code == 403
    assert c.get("/api/items/999", headers=h).status_code == 404
    bad = [{"item_id": item["id"], "action": "delete"}, {"item_id": item["id"], "worse": "both", "edited": "x"},
           {"item_id": item["id"], "edited": "x", "seconds": -1}, {"item_id": item["id"], "edited": "x", "extra": 1},
           {"item_id": "1; DROP TABLE items", "edited": "x"}]
    for body in bad:
        assert c.post("/api/submit", headers=h, json=body).status_code == 422, body
    assert c.post("/api/submit", headers=h, json={"item_id": item["id"]}).status_code == 422  # edit mode: no text
    assert db_rows(store.path, "SELECT COUNT(*) FROM annotations") == [(0,)]


def test_diff_is_the_projects_alignment_and_minimality():
    # "the cat sat on the mat" -> "the dog sat on the red mat": "cat"->"dog" replaced, "red" inserted:
    # original span [4, 7); edited spans [4, 7) ("dog") and [19, 22) ("red"); ratio (1 + 1) / 6 words = 0.3333
    from finealign.serve.annotate import diff_payload

    d = diff_payload("the cat sat on the mat", "the dog sat on the red mat", 0.5)
    assert d["original_spans"] == [[4, 7]] and d["edited_spans"] == [[4, 7], [19, 22]]
    assert d["edit_ratio"] == 0.3333 and d["status"] == "ok"
    # past the threshold: 4 of 6 words replaced = 0.667 > 0.5
    d = diff_payload("the cat sat on the mat", "a dog lay on some mat", 0.5)
    assert d["status"] == "too_large" and d["edit_ratio"] == round(check_edit("the cat sat on the mat",
                                                                              "a dog lay on some mat").ratio, 4)


def test_diff_api_matches_core_and_token_labels_match_the_trainer(tmp_path):
    from finealign.data.records import EditRecord
    from finealign.models import load_tokenizer
    from finealign.models.token_rm_data import build_pair_examples

    tok = load_tokenizer("tiny-random")
    store = AnnotationStore(tmp_path / "a.sqlite")
    store.import_file(write_jsonl(tmp_path / "p.jsonl", make_pairs(1)))
    t = store.add_annotator("a")
    c = TestClient(create_app(store, tokenizer=tok))
    item = c.get("/api/next", headers=bearer(t)).json()["item"]
    edited = "Blue is a colour, number 0, I believe."
    d = c.post("/api/diff", headers=bearer(t), json={"item_id": item["id"], "edited": edited}).json()
    sa, sb = diff_char_spans(item["rejected"], edited)
    assert (d["original_spans"], d["edited_spans"]) == ([list(s) for s in sa], [list(s) for s in sb])
    # the labelled tokens shown are the ones the token RM's example encoder labels
    (ex,), _ = build_pair_examples([EditRecord(prompt=item["prompt"], original=item["rejected"], edited=edited)], tok, 512)
    for side, shown in ((ex.edited, d["tokens"]["edited"]), (ex.original, d["tokens"]["original"])):
        want = sum(side.changed)
        assert want > 0 and shown["changed"] == want == len(shown["ranges"])
        assert shown["tokens"] == sum(side.response_mask)


def test_review_mode_accept_correct_reject(tmp_path):
    store = AnnotationStore(tmp_path / "r.sqlite")
    store.import_file(write_jsonl(tmp_path / "edits.jsonl", make_edits(4)))
    t = store.add_annotator("rita")
    c = TestClient(create_app(store))
    h = bearer(t)
    sent = []
    for body in ({"decision": "accept"}, {"decision": "correct", "edited": "The earth orbits the sun every 1 day."},
                 {"decision": "reject"}, {"decision": "correct"}):
        item = c.get("/api/next", headers=h).json()["item"]
        assert item["mode"] == "review" and item["llm_edit"].startswith("The earth")
        if body == {"decision": "correct"}:  # a correction equal to the LLM's edit counts as accepting it
            body = {"decision": "correct", "edited": item["llm_edit"]}
        r = c.post("/api/submit", headers=h, json={"item_id": item["id"], **body})
        assert r.status_code == 200, r.text
        sent.append(r.json()["annotation"]["decision"])
    assert sent == ["accept", "correct", "reject", "accept"]
    records, counts = export_records(store)
    assert counts["exported"] == 3 and counts["not_edits"] == 1  # the rejection carries no edit
    by_key = {r["meta"]["item"]: r for r in records}
    assert by_key["e1"]["edited"] == "The earth orbits the sun every 1 day."
    assert by_key["e1"]["meta"]["llm_edit"] == "The earth orbits the sun every 1 days."
    assert by_key["e0"]["edited"] == by_key["e0"]["meta"]["llm_edit"] and by_key["e0"]["meta"]["decision"] == "accept"
    assert by_key["e0"]["meta"]["source_meta"]["editor"] == "local:tiny-random"


def test_skip_flag_and_progress(project):
    store, c, tok = project
    ha, hb = bearer(tok["alice"]), bearer(tok["bob"])
    first = c.get("/api/next", headers=ha).json()["item"]
    assert c.post("/api/submit", headers=ha, json={"item_id": first["id"], "action": "skip"}).status_code == 200
    second = c.get("/api/next", headers=ha).json()["item"]
    r = c.post("/api/submit", headers=ha, json={"item_id": second["id"], "action": "skip", "flag": "off-topic prompt"})
    assert r.json()["annotation"]["status"] == "flagged"
    third = c.get("/api/next", headers=ha).json()["item"]
    r = c.post("/api/submit", headers=ha, json={"item_id": third["id"], "edited": "Blue is a colour, number 2.",
                                                "flag": "prompt is ambiguous"})
    assert r.status_code == 200
    prog = c.get("/api/me", headers=ha).json()["progress"]
    assert (prog["done"], prog["submitted"], prog["skipped"], prog["flagged"], prog["remaining"]) == (3, 1, 1, 1, 0)
    # a plain skip leaves the item to others; a flag counts as a judgement
    assert c.get("/api/next", headers=hb).json()["item"]["id"] == first["id"]
    assert c.get("/api/next", headers=ha).json()["item"] is None
    (rec,), _ = export_records(store)
    assert rec["meta"]["flags"] == ["prompt is ambiguous"]
    assert export_records(store, skip_flagged=True)[0] == []
    assert [h["item_id"] for h in c.get("/api/history", headers=ha).json()["history"]] == [third["id"], second["id"],
                                                                                          first["id"]]


def test_assignment_with_overlap_never_collides_and_stats_agree(tmp_path, capsys):
    store = AnnotationStore(tmp_path / "o.sqlite")
    store.import_file(write_jsonl(tmp_path / "p.jsonl", make_pairs(10)))
    assert store.set_overlap(0.3, 2) == 3  # round(0.3 * 10)
    people = {n: store.add_annotator(n) for n in ("a", "b", "c")}
    who = {n: store.annotator_for_token(t) for n, t in people.items()}
    done: list[tuple[str, int]] = []
    for _ in range(20):  # round robin until nobody gets anything
        got = False
        for n, a in who.items():
            item = store.next_item(a)
            if item is None:
                continue
            got = True
            worse = "chosen" if n == "c" else "rejected"  # c always disagrees on the worse side
            store.submit(a, Submission(item.id, edited=item.original_for(worse) + " Yes.", worse=worse, seconds=5))
            done.append((n, item.id))
        if not got:
            break
    targets = {i.id: i.target for i in store.items()}
    per_item = {i: sorted(n for n, j in done if j == i) for i in targets}
    assert all(len(per_item[i]) == targets[i] for i in targets)  # every item exactly as often as wanted
    assert all(len(set(v)) == len(v) for v in per_item.values())  # never twice by one person
    assert len(done) == 10 + 3
    assert run_cli(["annotate", "stats", "--db", store.path]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["items"]["complete"] == 10 and s["items"]["overlap_items"] == 3 and s["agreement"]["items"] == 3
    pairs = [v for i, v in per_item.items() if len(v) == 2]
    same = sum("c" not in v for v in pairs)  # pairs without c agree on the worse side
    assert s["agreement"]["worse_agreement"] == round(same / 3, 4)
    # same side -> same insertion at the end -> Jaccard 1; different sides -> not compared
    assert s["agreement"]["edit_pairs"] == same and (same == 0 or s["agreement"]["edit_jaccard"] == 1.0)
    assert sum(p["submitted"] for p in s["annotators"]) == 13
    a = next(p for p in s["annotators"] if p["name"] == "a")
    assert a["items_per_hour"] == round(a["submitted"] / (a["seconds"] / 3600), 1)  # 5 s per item -> 720/h


def test_lease_expiry_frees_an_abandoned_item(tmp_path):
    store = AnnotationStore(tmp_path / "l.sqlite", lease_s=60)
    store.import_file(write_jsonl(tmp_path / "p.jsonl", make_pairs(1)))
    a = store.annotator_for_token(store.add_annotator("a"))
    b = store.annotator_for_token(store.add_annotator("b"))
    t0 = 1_000_000.0
    assert store.next_item(a, now=t0).key == "q0"
    assert store.next_item(b, now=t0 + 59) is None  # still reserved for a
    assert store.next_item(b, now=t0 + 61).key == "q0"  # lease ran out
    assert store.next_item(a, now=t0 + 62).key == "q0"  # a still holds it too: both may finish it


def test_edit_unit_sets_and_jaccard():
    # "the cat sat" -> "the dog sat down": unit 1 replaced, words inserted before unit 3 (the end)
    assert edit_unit_set("the cat sat", "the dog sat down") == {("w", 1), ("gap", 3)}
    # {w1, gap3} vs {w1}: 1 shared of 2 -> 0.5; two empty sets agree fully
    assert jaccard(frozenset({("w", 1), ("gap", 3)}), frozenset({("w", 1)})) == 0.5
    assert jaccard(frozenset(), frozenset()) == 1.0


# ---------------------------------------------------------------------------------------------- data and security


def test_import_is_idempotent_and_checks_content(tmp_path):
    store = AnnotationStore(tmp_path / "i.sqlite")
    src = write_jsonl(tmp_path / "p.jsonl", make_pairs(2))
    assert store.import_file(src) == (2, 0)
    assert store.import_file(src) == (0, 2)
    changed = make_pairs(2)
    changed[1]["rejected"] = "something else"
    with pytest.raises(DataError, match=r"p2\.jsonl:2: id: item 'q1' is already in"):
        store.import_file(write_jsonl(tmp_path / "p2.jsonl", changed))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: rejected: missing"):
        store.import_file(bad)
    ratings = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "response": "r", "score": 1}])
    with pytest.raises(DataError, match="expected pairs"):
        store.import_file(ratings)
    dup = write_jsonl(tmp_path / "d.jsonl", make_pairs(1) + make_pairs(1))
    with pytest.raises(DataError, match="duplicate id"):
        store.import_file(dup)
    assert store.count_items() == 2


def test_hostile_texts_round_trip_verbatim_and_sql_stays_parameterised(tmp_path):
    store = AnnotationStore(tmp_path / "h.sqlite")
    store.import_file(write_jsonl(tmp_path / "h.jsonl", HOSTILE))
    name = "x'); DROP TABLE items; --"
    t = store.add_annotator(name)
    c = TestClient(create_app(store))
    got = [c.get("/api/next", headers=bearer(t)).json()["item"]]
    edited = got[0]["rejected"] + " <script>alert('edit')</script>"
    assert c.post("/api/submit", headers=bearer(t), json={"item_id": got[0]["id"], "edited": edited}).status_code == 200
    got.append(c.get("/api/next", headers=bearer(t)).json()["item"])
    for item, src in zip(got, HOSTILE):
        assert (item["key"], item["prompt"], item["chosen"], item["rejected"]) == (src["id"], src["prompt"],
                                                                                   src["chosen"], src["rejected"])
    assert db_rows(store.path, "SELECT COUNT(*) FROM items") == [(2,)]
    (rec,), _ = export_records(store)
    assert rec["edited"] == edited and rec["meta"]["annotator"] == name
    assert c.get("/api/me", headers=bearer(t)).json()["name"] == name


def test_size_limits_and_security_headers(tmp_path):
    store = AnnotationStore(tmp_path / "s.sqlite")
    store.import_file(write_jsonl(tmp_path / "p.jsonl", make_pairs(1)))
    t = store.add_annotator("a")
    c = TestClient(create_app(store, max_chars=100, max_body=4096))
    item = c.get("/api/next", headers=bearer(t)).json()["item"]
    r = c.post("/api/diff", headers=bearer(t), json={"item_id": item["id"], "edited": "x" * 5000})
    assert r.status_code == 413  # refused before parsing
    r = c.post("/api/submit", headers=bearer(t), json={"item_id": item["id"], "edited": "x" * 101})
    assert r.status_code == 422 and "limit of 100" in r.json()["detail"]
    r = c.post("/api/submit", headers=bearer(t), json={"item_id": item["id"], "edited": "y",
                                                       "flag": "f" * 501})
    assert r.status_code == 422
    for path in ("/", "/static/app.js", "/api/health"):
        h = c.get(path).headers
        assert "script-src 'self'" in h["content-security-policy"] and "unsafe-inline" not in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"] == "no-referrer"
    assert c.get("/api/health").headers["cache-control"] == "no-store"
    assert c.get("/static/../store.py").status_code == 404 and c.get("/static/index.html").status_code == 404
    js = c.get("/static/app.js").text
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_add_annotator_export_stats(tmp_path, capsys):
    db = tmp_path / "c.sqlite"
    assert run_cli(["annotate", "add-annotator", "ann", "--db", db]) == 0
    cap = capsys.readouterr()
    token = cap.out.strip()
    assert len(token) >= 32 and f"#token={token}" in cap.err.replace("\n", "")
    assert token not in db.read_bytes().decode("latin-1")  # only the hash is stored
    assert run_cli(["annotate", "add-annotator", "ann", "--db", db]) == 1
    assert "exists; pass --rotate" in capsys.readouterr().err
    assert run_cli(["annotate", "add-annotator", "ann", "--db", db, "--rotate", "-q"]) == 0
    new = capsys.readouterr().out.strip()
    store = AnnotationStore(db)
    assert new != token and store.annotator_for_token(token) is None and store.annotator_for_token(new).name == "ann"
    assert run_cli(["annotate", "export", tmp_path / "o.jsonl", "--db", tmp_path / "missing.sqlite"]) == 1
    assert "no such annotation database" in capsys.readouterr().err
    assert run_cli(["annotate", "serve", "--db", db, "--port", str(free_port())]) == 1
    assert "no items yet" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    assert run_cli(["annotate", "serve", "--db", db, "--data", bad]) == 1
    assert "bad.jsonl:2: rejected: missing" in capsys.readouterr().err
    assert run_cli(["annotate", "serve", "--db", db, "--overlap", "1.5"]) == 1
    assert "overlap" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- real server


def annotate_loop(base: str, token: str, edits: list, timeout: float = 60.0) -> None:
    """One annotator working through the queue: next, live diff, submit; records each acknowledged submit."""
    with httpx.Client(base_url=base, headers=bearer(token), timeout=timeout) as c:
        while True:
            data = c.get("/api/next").raise_for_status().json()
            item = data["item"]
            if item is None:
                return
            text = item["rejected"].replace("fruit", "colour")
            c.post("/api/diff", json={"item_id": item["id"], "edited": text}).raise_for_status()
            c.post("/api/submit", json={"item_id": item["id"], "edited": text, "seconds": 1}).raise_for_status()
            edits.append((token, item["id"]))


def test_concurrent_annotators_lose_and_duplicate_nothing(tmp_path):
    store = AnnotationStore(tmp_path / "cc.sqlite")
    store.import_file(write_jsonl(tmp_path / "p.jsonl", make_pairs(60)))
    tokens = [store.add_annotator(f"n{i}") for i in range(8)]
    acked: list = []
    with serve_in_thread(create_app(store.path)) as base:
        with ThreadPoolExecutor(8) as pool:  # bounded: 8 clients on loopback
            for f in [pool.submit(annotate_loop, base, t, acked) for t in tokens]:
                f.result(timeout=120)
        # one person hammering the same item from 8 connections: still one row
        t = store.add_annotator("same")
        with httpx.Client(base_url=base, headers=bearer(t), timeout=30) as c:
            assert c.get("/api/next").json()["item"] is None  # everything is done
        store.import_file(write_jsonl(tmp_path / "one.jsonl", [{"id": "extra", "prompt": "p", "chosen": "a b",
                                                                 "rejected": "c d"}]))
        with httpx.Client(base_url=base, headers=bearer(t), timeout=30) as c:
            iid = c.get("/api/next").json()["item"]["id"]

        def resubmit(k):
            with httpx.Client(base_url=base, headers=bearer(t), timeout=30) as c:
                return c.post("/api/submit", json={"item_id": iid, "edited": f"c e{k}", "seconds": 1}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(resubmit, range(16))) == [200] * 16
    rows = db_rows(store.path, "SELECT item_id, annotator_id FROM annotations WHERE item_id != ?", (iid,))
    assert len(acked) == len(rows) == 60  # every acknowledged submit is stored, each item exactly once
    assert len({r[0] for r in rows}) == 60
    assert db_rows(store.path, "SELECT submissions, seconds FROM annotations WHERE item_id=?", (iid,)) == [(16, 16.0)]


def _start_server(db: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "finealign.cli.main", "annotate", "serve", "--db", str(db),
                             "--port", str(port), "-q"], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start within 90 s")


def test_crash_and_restart_mid_session_loses_nothing(tmp_path):
    db = tmp_path / "crash.sqlite"
    store = AnnotationStore(db)
    store.import_file(write_jsonl(tmp_path / "p.jsonl", make_pairs(3)))
    token = store.add_annotator("ann")
    port = free_port()
    proc = _start_server(db, port)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers=bearer(token), timeout=30) as c:
            first = c.get("/api/next").json()["item"]
            c.post("/api/submit", json={"item_id": first["id"], "edited": "Blue is a colour, number 0.",
                                        "seconds": 3}).raise_for_status()
            second = c.get("/api/next").json()["item"]  # handed out, not yet submitted
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: no shutdown, no checkpoint
        proc.wait(timeout=30)
    assert db_rows(db, "SELECT item_id, edited FROM annotations") == [(first["id"], "Blue is a colour, number 0.")]
    proc = _start_server(db, port)
    try:
        with httpx.Client(base_url=base, headers=bearer(token), timeout=30) as c:
            data = c.get("/api/next").json()
            assert data["item"]["id"] == second["id"]  # the item in progress comes back
            assert data["progress"]["submitted"] == 1 and data["progress"]["remaining"] == 2
            c.post("/api/submit", json={"item_id": second["id"], "edited": "Blue is a colour, number 1.",
                                        "seconds": 2}).raise_for_status()
            assert c.get("/api/next").json()["item"]["key"] == "q2"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert len(db_rows(db, "SELECT * FROM annotations")) == 2


def test_store_rejects_a_non_database(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(FinealignError, match="not an annotation database"):
        AnnotationStore(junk)
