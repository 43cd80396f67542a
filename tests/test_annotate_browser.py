"""The annotation page in a real browser: Playwright drives Debian's Chromium (``apt-get install chromium``;
launched by its executable path, Playwright's own browser download is not used).

Edit mode: open the page, edit the worse response, see the live diff and the edit-ratio meter, submit
with the keyboard; a non-minimal edit needs a second submit; flip, flag, skip, back and resubmit; hostile
texts render as text. Review mode: accept, correct and reject LLM edits, with token labels shown. Two tabs:
a stale tab's skip of a submitted item asks before it withdraws the edit. Each
test asserts the database rows and the exported records; the first one saves ``docs/annotate.png``.
"""

from __future__ import annotations

import shutil

import pytest

from conftest import REPO, run_cli
from finealign.serve.annotate import AnnotationStore, create_app
from test_annotate import HOSTILE, db_rows, make_edits, serve_in_thread, write_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed")
sync_api = pytest.importorskip("playwright.sync_api")

SPIDER = {"id": "spider", "prompt": "How many legs does a spider have? Answer in one sentence.",
          "chosen": "A spider has eight legs.", "rejected": "A spider has six legs, like every other insect."}
SPIDER_EDIT = "A spider has eight legs, unlike an insect."
INJECTED = "#work script, #work img, #work svg, #work a, #work b, #work [onerror], #work [onmouseover]"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def open_page(browser, base: str, token: str):
    """A page on ``base/#token=...`` that records script errors; waits until the work area shows.

    The page's Content-Security-Policy is bypassed, so Playwright can evaluate its checks and so an
    injected inline handler would run: the hostile-data checks then test the escaping alone.
    """
    page = browser.new_page(viewport={"width": 1200, "height": 590}, bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/#token={token}")
    page.wait_for_selector("#work:not([hidden])", timeout=15_000)
    return page, errors


def next_key(page, old: str) -> None:
    """Wait until the page shows another item (or the 'nothing left' section)."""
    page.wait_for_function("k => document.getElementById('key').textContent !== k || "
                           "!document.getElementById('done').hidden", arg=old, timeout=15_000)


def marked(page, sel: str) -> list[str]:
    return page.eval_on_selector_all(f"{sel} mark", "ms => ms.map(m => m.textContent)")


def test_edit_mode_in_chromium(browser, tmp_path, capsys):
    from finealign.data.io import read_records

    db = tmp_path / "edit.sqlite"
    store = AnnotationStore(db)
    store.import_file(write_jsonl(tmp_path / "pairs.jsonl", [SPIDER] + HOSTILE))
    token = store.add_annotator("ada")
    with serve_in_thread(create_app(store)) as base:
        page, errors = open_page(browser, base, token)
        assert "token" not in page.url  # the token leaves the address bar
        assert page.inner_text("#key") == "spider" and page.input_value("#editor") == SPIDER["rejected"]
        page.fill("#editor", SPIDER_EDIT)
        page.wait_for_selector("#backdrop mark.ins")
        assert marked(page, "#original") == ["six", "like every other"]  # the project's word diff
        assert marked(page, "#backdrop") == ["eight", "unlike an"]
        # 4 of the original's 11 word units replaced (six, like, every, other) -> 0.36 <= 0.5
        assert "edit ratio 0.36 (limit 0.50): minimal" in page.inner_text("#meter-text")
        assert "0 done" in page.inner_text("#progress")
        page.screenshot(path=str(REPO / "docs" / "annotate.png"))
        page.keyboard.press("Control+Enter")
        next_key(page, "spider")

        # hostile item 1: rendered as text, nothing injected, nothing executed
        assert page.inner_text("#key") == "h1"
        assert "<script>window.__pwned=1</script>" in page.inner_text("#prompt")
        assert page.input_value("#editor") == HOSTILE[0]["rejected"]
        assert page.eval_on_selector_all(INJECTED, "els => els.length") == 0
        # a non-minimal edit: the meter warns, the first submit only warns, the second goes through
        page.fill("#editor", "Four, obviously, as everyone knows.")
        page.wait_for_selector(".meter.over")
        assert "not minimal" in page.inner_text("#meter-text")
        page.keyboard.press("Control+Enter")
        page.wait_for_function("document.getElementById('status').textContent.includes('submit again')")
        assert page.inner_text("#key") == "h1"
        page.keyboard.press("Control+Enter")
        next_key(page, "h1")

        # hostile item 2: chat prompt, flip, flag, skip, back, resubmit
        key2 = HOSTILE[1]["id"]
        assert page.inner_text("#key") == key2
        assert page.eval_on_selector_all("#prompt .msg", "ms => ms.length") == 2
        assert page.inner_text("#better") == HOSTILE[1]["chosen"]
        page.click("#editor")
        page.keyboard.press("Alt+KeyW")  # flip: the chosen response is the worse one
        assert page.inner_text("#better") == HOSTILE[1]["rejected"]
        assert page.input_value("#editor") == HOSTILE[1]["chosen"]
        page.keyboard.press("Alt+KeyF")  # no reason yet: refused
        assert "Type a reason" in page.inner_text("#status")
        page.fill("#reason", "prompt asks for a <a> link")
        page.keyboard.press("Alt+KeyF")
        assert page.is_visible("#flag-chip")
        page.keyboard.press("Alt+KeyS")
        page.wait_for_selector("#done:not([hidden])")
        page.keyboard.press("Alt+KeyB")  # back to the flagged item; resubmitting replaces the skip
        page.wait_for_selector("#work:not([hidden])")
        assert page.inner_text("#key") == key2 and page.is_visible("#revisit") and page.is_visible("#flag-chip")
        page.keyboard.press("Alt+KeyW")
        page.fill("#editor", HOSTILE[1]["chosen"] + " (fake)")  # 3 inserted units / 7 = 0.43
        page.wait_for_selector("#backdrop mark.ins")
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("#done:not([hidden])")
        assert page.evaluate("window.__pwned") is None
        assert page.eval_on_selector_all(INJECTED, "els => els.length") == 0
        assert errors == []
        page.close()

    rows = {r[0]: r[1:] for r in db_rows(db, "SELECT i.key, n.status, n.edited, n.minimality, n.worse, n.flag, "
                                             "n.submissions, n.seconds FROM annotations n JOIN items i ON i.id = n.item_id")}
    assert rows["spider"][:4] == ("submitted", SPIDER_EDIT, "ok", "rejected") and rows["spider"][6] > 0
    assert rows["h1"][:3] == ("submitted", "Four, obviously, as everyone knows.", "too_large")
    assert rows[key2][:6] == ("submitted", HOSTILE[1]["chosen"] + " (fake)", "ok", "chosen",
                              "prompt asks for a <a> link", 2)
    out = tmp_path / "out.jsonl"
    assert run_cli(["annotate", "export", out, "--db", db]) == 0
    recs = {r.meta["item"]: r for r in read_records(out, "edit")}
    assert recs["spider"].edited == SPIDER_EDIT and recs["spider"].prompt == SPIDER["prompt"]
    assert recs[key2].meta["flipped"] is True and recs[key2].meta["flags"] == ["prompt asks for a <a> link"]
    assert recs[key2].original == HOSTILE[1]["chosen"] and recs["h1"].meta["minimality"] == "too_large"


def test_review_mode_in_chromium_with_token_labels(browser, tmp_path):
    from finealign.models import load_tokenizer
    from finealign.serve.annotate import export_records

    db = tmp_path / "review.sqlite"
    store = AnnotationStore(db)
    store.import_file(write_jsonl(tmp_path / "edits.jsonl", make_edits(3)))
    token = store.add_annotator("rev")
    with serve_in_thread(create_app(store, tokenizer=load_tokenizer("tiny-random"))) as base:
        page, errors = open_page(browser, base, token)
        assert page.inner_text("#mode") == "review mode" and not page.is_visible("#better-panel")
        assert page.input_value("#editor") == make_edits(3)[0]["edited"]
        page.wait_for_selector("#backdrop mark.tok")  # token labels, as the token RM would get them
        assert "tokens that get a label" in page.inner_text("#legend")
        assert "tokens labelled" in page.inner_text("#meter-text")
        page.click("#editor")
        page.keyboard.press("Alt+KeyA")  # accept
        next_key(page, "e0")
        assert page.inner_text("#key") == "e1"
        page.fill("#editor", "The earth orbits the sun every 365 days.")  # correct
        page.wait_for_function("document.getElementById('meter-text').textContent.includes('minimal')")
        page.keyboard.press("Control+Enter")
        next_key(page, "e1")
        assert page.inner_text("#key") == "e2"
        page.click("#reject")
        page.wait_for_selector("#done:not([hidden])")
        assert errors == []
        page.close()
    rows = db_rows(db, "SELECT i.key, n.decision, n.edited FROM annotations n JOIN items i ON i.id = n.item_id "
                       "ORDER BY i.id")
    assert rows == [("e0", "accept", "The earth orbits the sun every 0 days."),
                    ("e1", "correct", "The earth orbits the sun every 365 days."), ("e2", "reject", None)]
    records, counts = export_records(store)
    assert counts == {"exported": 2, "flagged_left_out": 0, "too_large_left_out": 0, "not_edits": 1}
    assert [r["meta"]["decision"] for r in records] == ["accept", "correct"]
    assert records[1]["meta"]["llm_edit"] == "The earth orbits the sun every 1 days."


def test_two_tabs_a_stale_skip_asks_before_it_withdraws_a_submitted_edit(browser, tmp_path):
    """Issue 27: tab 2 still shows the item tab 1 just submitted; its skip must not delete the edit silently."""
    from finealign.serve.annotate import export_records

    db = tmp_path / "tabs.sqlite"
    store = AnnotationStore(db)
    store.import_file(write_jsonl(tmp_path / "pairs.jsonl", [SPIDER]))
    token = store.add_annotator("ada")
    with serve_in_thread(create_app(store)) as base:
        tab1, errors1 = open_page(browser, base, token)
        tab2, errors2 = open_page(browser, base, token)
        assert tab1.inner_text("#key") == tab2.inner_text("#key") == "spider"
        tab1.fill("#editor", SPIDER_EDIT)
        tab1.wait_for_selector("#backdrop mark.ins")
        tab1.keyboard.press("Control+Enter")
        tab1.wait_for_selector("#done:not([hidden])")
        # the stale tab skips: the page asks; "no" keeps the edit and shows it
        asked = []
        tab2.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
        tab2.click("#editor")
        tab2.keyboard.press("Alt+KeyS")
        tab2.wait_for_function("document.getElementById('status').textContent.includes('Kept your submitted')")
        assert "another tab" in asked[0] and "withdraw" in asked[0]
        assert tab2.input_value("#editor") == SPIDER_EDIT and tab2.is_visible("#revisit")
        assert db_rows(db, "SELECT status, edited FROM annotations") == [("submitted", SPIDER_EDIT)]
        assert [r["edited"] for r in export_records(store)[0]] == [SPIDER_EDIT]
        # "yes" withdraws it from the export; the history keeps both answers
        tab2.once("dialog", lambda d: d.accept())
        tab2.keyboard.press("Alt+KeyS")
        tab2.wait_for_selector("#done:not([hidden])")
        assert db_rows(db, "SELECT status FROM annotations") == [("skipped",)]
        assert [h["status"] for h in store.submissions()] == ["submitted", "skipped"]
        assert export_records(store)[0] == []
        # no script error; the browser logs each refused skip's 409 response (two skips, each refused once)
        assert errors1 == [] and len(errors2) == 2 and all("409 (Conflict)" in e for e in errors2)
        tab1.close()
        tab2.close()
