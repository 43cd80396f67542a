"""The annotation app keeps every submission: two tabs of one annotator, a stale skip that must not delete a
submitted edit without confirmation, the export of the latest submitted edit, and the upgrade of a
version-1 database (issue 27)."""

from __future__ import annotations

import sqlite3

from fastapi.testclient import TestClient

from finealign.serve.annotate import AnnotationStore, compute_stats, create_app, export_records
from test_annotate import bearer, db_rows, make_pairs, write_jsonl

EDIT = "Blue is a colour, number 0, I think."


def _project(tmp_path):
    store = AnnotationStore(tmp_path / "ann.sqlite")
    store.import_file(write_jsonl(tmp_path / "pairs.jsonl", make_pairs(2)))
    token = store.add_annotator("alice")
    app = create_app(store)
    return store, TestClient(app), TestClient(app), bearer(token)


def test_two_tabs_a_stale_skip_never_replaces_a_submitted_edit(tmp_path):
    store, tab1, tab2, h = _project(tmp_path)
    item = tab1.get("/api/next", headers=h).json()["item"]
    assert tab2.get("/api/next", headers=h).json()["item"]["id"] == item["id"]  # both tabs show the same item
    assert tab1.post("/api/submit", headers=h, json={"item_id": item["id"], "edited": EDIT, "seconds": 3}).status_code == 200
    # the second tab still shows the item as unanswered; its skip (or flagged skip) is refused, nothing stored
    for body in ({"action": "skip"}, {"action": "skip", "flag": "unclear prompt"}):
        r = tab2.post("/api/submit", headers=h, json={"item_id": item["id"], "seconds": 9, **body})
        assert r.status_code == 409 and "another tab" in r.json()["detail"] and "confirm" in r.json()["detail"]
    assert db_rows(store.path, "SELECT status, edited, seconds FROM annotations") == [("submitted", EDIT, 3.0)]
    (rec,), _ = export_records(store)
    assert rec["edited"] == EDIT and rec["id"] == "q0@alice"
    # an explicit confirmation withdraws the edit from the export; the history keeps it
    r = tab2.post("/api/submit", headers=h, json={"item_id": item["id"], "action": "skip", "confirm": True})
    assert r.status_code == 200 and r.json()["annotation"]["status"] == "skipped"
    assert export_records(store)[0] == []
    hist = tab1.get(f"/api/items/{item['id']}", headers=h).json()["history"]
    assert [(x["status"], x["edited"]) for x in hist] == [("submitted", EDIT), ("skipped", None)]
    # back in the first tab, submitting again makes the edit the latest answer: exported again
    assert tab1.post("/api/submit", headers=h, json={"item_id": item["id"], "edited": EDIT}).status_code == 200
    (rec,), counts = export_records(store)
    assert rec["edited"] == EDIT and counts["exported"] == 1
    assert compute_stats(store)["history"] == {"submissions": 3, "resubmitted": 1, "withdrawn": 0}


def test_the_export_takes_the_latest_submitted_edit_and_the_history_keeps_both(tmp_path):
    store, tab1, tab2, h = _project(tmp_path)
    item = tab1.get("/api/next", headers=h).json()["item"]
    later = "Blue is a colour, number 0, I am sure."
    assert tab1.post("/api/submit", headers=h, json={"item_id": item["id"], "edited": EDIT}).status_code == 200
    assert tab2.post("/api/submit", headers=h, json={"item_id": item["id"], "edited": later}).status_code == 200
    (rec,), _ = export_records(store)
    assert rec["edited"] == later and rec["meta"]["submissions"] == 2
    assert [x["edited"] for x in store.submissions(item_id=item["id"])] == [EDIT, later]
    # a skip before any submission needs no confirmation, and a submission may always follow a skip
    other = tab1.get("/api/next", headers=h).json()["item"]
    assert tab1.post("/api/submit", headers=h, json={"item_id": other["id"], "action": "skip"}).status_code == 200
    assert tab2.post("/api/submit", headers=h, json={"item_id": other["id"],
                                                     "edited": "Blue is a colour, number 1."}).status_code == 200
    assert len(export_records(store)[0]) == 2
    stats = compute_stats(store)["history"]
    assert stats == {"submissions": 4, "resubmitted": 2, "withdrawn": 0}


def test_a_version_1_database_is_upgraded_with_its_answers_as_history(tmp_path):
    store, tab1, _, h = _project(tmp_path)
    item = tab1.get("/api/next", headers=h).json()["item"]
    tab1.post("/api/submit", headers=h, json={"item_id": item["id"], "edited": EDIT})
    with sqlite3.connect(store.path) as con:  # make it look like a database written before the history existed
        con.execute("DROP TABLE submissions")
        con.execute("UPDATE meta SET value='1' WHERE key='schema'")
    again = AnnotationStore(store.path)
    assert db_rows(store.path, "SELECT value FROM meta WHERE key='schema'") == [("2",)]
    assert [(x["status"], x["edited"], x["annotator"]) for x in again.submissions()] == [("submitted", EDIT, "alice")]
    AnnotationStore(store.path)  # opening it again adds nothing
    assert len(again.submissions()) == 1
