"""Heatmap rendering and ``finealign explain`` with a hand-made token scorer (and the real one if present)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from conftest import run_cli
from finealign.errors import FinealignError
from finealign.report.heatmap import (HIGH, LOW, WHITE, HeatmapItem, Panel, color_for, render_html, render_terminal,
                                      segments)
from finealign.rewards.base import TokenScorer, TokenScores, register_scorer

BAD = "Lyon"


class FakeTokenScorer(TokenScorer):
    """Tokens = whitespace-led words (``\\s*\\S+``); reward -2 for a token containing BAD, else +0.5."""

    name = "fake-token"

    def __init__(self):
        self.calls = 0

    def score(self, prompts, responses):
        return [sum(s.rewards) for s in self.score_tokens(prompts, responses)]

    def score_tokens(self, prompts, responses):
        assert len(prompts) == len(responses)
        self.calls += 1
        if any("OVERLONG" in r for r in responses):  # as the token-rm scorer does for a too-long text
            raise FinealignError("response is longer than the context window")
        out = []
        for r in responses:
            offs = [(m.start(), m.end()) for m in re.finditer(r"\s*\S+", r)]
            out.append(TokenScores(list(range(100, 100 + len(offs))), offs,
                                   [-2.0 if BAD in r[s:e] else 0.5 for s, e in offs]))
        return out


@register_scorer("fake-token")
def _fake(arg=None, **_):
    return FakeTokenScorer()


def write_jsonl(path: Path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- renderer


def test_segments_cover_text_once():
    # "ab cd!" tokens: "ab"(0,2) " cd"(2,5); "!" (5,6) is not covered -> plain segment
    ts = TokenScores([1, 2], [(0, 2), (2, 5)], [0.5, -1.0])
    segs = segments("ab cd!", ts, [0, 1])
    assert [(s.start, s.end, s.rewards, s.changed) for s in segs] == [
        (0, 2, (0.5,), False), (2, 5, (-1.0,), True), (5, 6, (), False)]
    # byte-level pieces: three tokens on the same char (2,3) join one segment, rewards summed 0.1+0.2+0.3
    ts = TokenScores([1, 2, 3, 4, 5], [(0, 2), (2, 3), (2, 3), (2, 3), (0, 0)], [1.0, 0.1, 0.2, 0.3, 9.0])
    segs = segments("ab😀", ts)
    assert [(s.start, s.end) for s in segs] == [(0, 2), (2, 3)]
    assert segs[1].token_ids == (2, 3, 4) and segs[1].reward == pytest.approx(0.6)
    # partial overlap ' 日'(0,2) then '日'(1,2): the second joins; offsets past the end are clipped
    segs = segments(" 日x", TokenScores([1, 2, 3], [(0, 2), (1, 2), (2, 9)], [1.0, 2.0, 3.0]))
    assert [(s.start, s.end, s.rewards) for s in segs] == [(0, 2, (1.0, 2.0)), (2, 3, (3.0,))]
    # segments always tile the text exactly
    for text, ts in [("hello world", TokenScores([1], [(3, 5)], [1.0])), ("", TokenScores([], [], []))]:
        segs = segments(text, ts)
        assert "".join(text[s.start:s.end] for s in segs) == text


def test_color_for_hand_worked():
    assert color_for(0.0, 0.0, 2.0) == WHITE
    assert color_for(-2.0, 0.0, 2.0) == LOW and color_for(-5.0, 0.0, 2.0) == LOW  # saturates
    assert color_for(3.0, 1.0, 2.0) == HIGH
    # half way up: 255 + (67-255)*0.5 = 161, 255 + (147-255)*0.5 = 201, 255 + (195-255)*0.5 = 225
    assert color_for(1.0, 0.0, 2.0) == (161, 201, 225)


def _pair_item():
    a, b = "Paris <b>is</b> & nice", "Lyon <b>is</b> & nice"
    sa = TokenScores([1, 2, 3, 4, 5], [(0, 5), (5, 9), (9, 15), (15, 17), (17, 22)], [1.0, 0.0, 0.0, 0.0, 0.0])
    sb = TokenScores([6, 2, 3, 4, 5], [(0, 4), (4, 8), (8, 14), (14, 16), (16, 21)], [-1.0, 0.0, 0.0, 0.0, 0.0])
    return HeatmapItem("<script>alert('x')</script>", (Panel("original", b, sb, [1, 0, 0, 0, 0]),
                                                        Panel("edited", a, sa, [1, 0, 0, 0, 0])),
                       title="t", margin="edited − original")


def test_render_html_self_contained_and_escaped():
    page = render_html([_pair_item()], title="T <1>")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing external, nothing executable, every user text escaped
    assert "<script" not in page and "src=" not in page and "<link" not in page and "http" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert ">is&lt;/b&gt;</span>" in page and " &lt;b&gt;<" in page and "<b>" not in page and " &amp;</span>" in page and "T &lt;1&gt;" in page
    # two panels side by side, legend, and the two changed tokens outlined (plus the legend sample)
    assert "repeat(2, minmax(0, 1fr))" in page
    assert 'class="legend"' in page and page.count('class="t c"') == 3
    # scale = max |r| = 1 -> "Lyon" (-1) full red, "Paris" (+1) full blue
    assert f'background:#{LOW[0]:02x}{LOW[1]:02x}{LOW[2]:02x}" title="reward -1.0000; token id 6; changed">Lyon' in page
    assert "background:#4393c3" in page
    # margin = sum(edited) - sum(original) = 1 - (-1) = +2
    assert "edited − original: +2.000" in page


def test_render_terminal():
    from rich.console import Console

    con = Console(record=True, width=120, color_system="truecolor", force_terminal=True)
    render_terminal([_pair_item()], con)
    text = con.export_text()
    assert "Lyon <b>is</b> & nice" in text and "Paris" in text and "edited − original: +2.000" in text
    assert "legend" in text


def test_panel_validation():
    with pytest.raises(ValueError):
        Panel("x", "ab", TokenScores([1], [(0, 1)], [1.0, 2.0]))
    with pytest.raises(ValueError):
        Panel("x", "ab", TokenScores([1], [(0, 1)], [1.0]), changed=[0, 1])


# ---------------------------------------------------------------------------------------------- CLI


def test_scorer_spec(tmp_path):
    from finealign.cli.explain import scorer_spec

    (tmp_path / "rm").mkdir()
    assert scorer_spec(str(tmp_path / "rm")) == f"token-rm:{tmp_path / 'rm'}"  # an existing folder
    assert scorer_spec(f"{tmp_path / 'rm'},pool=mean") == f"token-rm:{tmp_path / 'rm'},pool=mean"
    assert scorer_spec("runs/missing") == "token-rm:runs/missing"  # the token-rm loader reports it
    assert scorer_spec("token-rm:runs/x,pool=mean") == "token-rm:runs/x,pool=mean"  # a spec passes through


def test_explain_cli_edits(tmp_path, capsys):
    edits = write_jsonl(tmp_path / "edits.jsonl", [
        {"prompt": "Capital of France?", "original": "It is Lyon.", "edited": "It is Paris.", "id": "e1"},
        {"prompt": [{"role": "user", "content": "Hi <there>"}], "original": "Hello  friend", "edited": "Hello friend"},
        {"prompt": "third", "original": "a", "edited": "b"},
    ])
    out = tmp_path / "out" / "heat.html"
    assert run_cli(["explain", "--token-rm", "fake-token:x", str(edits), str(out), "--limit", "2", "--terminal"]) == 0
    page = out.read_text(encoding="utf-8")
    # --limit 2: two items; item 1 outlines " Lyon." (original) and " Paris." (edited) only
    assert page.count('<div class="item">') == 2
    assert re.search(r'class="t c"[^>]*title="reward -2\.0000; token id 102; changed"> Lyon\.</span>', page)
    assert re.search(r'class="t c"[^>]*title="reward \+0\.5000; token id 102; changed"> Paris\.</span>', page)
    assert page.count('class="t c"') == 3  # 2 tokens + the legend sample; the whitespace-only edit outlines none
    # margin: edited 3 * 0.5 = 1.5, original 0.5 + 0.5 - 2 = -1 -> +2.5
    assert "edited − original: +2.500" in page
    assert "differ only in whitespace" in page and "user: Hi &lt;there&gt;" in page
    captured = capsys.readouterr()
    assert "It is Paris." in captured.out  # terminal rendering on stdout


def test_explain_cli_pairs_and_responses(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "q", "chosen": "Paris is right.", "rejected": "Lyon is right."}])
    out = tmp_path / "pairs.html"
    assert run_cli(["explain", "--token-rm", "fake-token:", str(pairs), str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    # pairs: rejected then chosen, no outlines unless --diff
    assert page.index(">rejected<") < page.index(">chosen<") and page.count('class="t c"') == 1
    assert run_cli(["explain", "--token-rm", "fake-token:", str(pairs), str(out), "--diff"]) == 0
    assert out.read_text(encoding="utf-8").count('class="t c"') == 3
    resp = write_jsonl(tmp_path / "resp.jsonl", [{"prompt": "q", "completion": "one two"}] * 3)
    assert run_cli(["explain", "--token-rm", "fake-token:", str(resp), str(out), "--limit", "0"]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count('<div class="item">') == 3 and "repeat(1, minmax(0, 1fr))" in page


def test_explain_cli_bad_input(tmp_path, capsys):
    out = tmp_path / "x.html"
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "only a prompt"}])
    assert run_cli(["explain", "--token-rm", "fake-token:", str(prompts), str(out)]) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "original": "a", "edited": "b"}\n{"prompt": "q", "original": "a"}\n')
    assert run_cli(["explain", "--token-rm", "fake-token:", str(bad), str(out)]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err
    ok = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "q", "completion": "a"}])
    # a sequence-only scorer cannot explain tokens
    assert run_cli(["explain", "--token-rm", "length:", str(ok), str(out)]) == 1
    assert run_cli(["explain", "--token-rm", "fake-token:", str(ok), str(out), "--center", "nope"]) == 1
    assert not out.exists()  # nothing written on any error


def test_explain_cli_skips_unscoreable_records(tmp_path, capsys):
    rows = [{"prompt": "q", "original": "It is Lyon.", "edited": "It is Paris."},
            {"prompt": "q", "original": "OVERLONG text", "edited": "short"},
            {"prompt": "q", "original": "b", "edited": "c"}]
    edits = write_jsonl(tmp_path / "e.jsonl", rows)
    out = tmp_path / "e.html"
    # the batch with record 2 fails; its other records are scored one by one and kept
    assert run_cli(["explain", "--token-rm", "fake-token:", str(edits), str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count('<div class="item">') == 2 and "#1" in page and "#3" in page and "1 skipped (record 2" in page
    assert "record 2 skipped" in capsys.readouterr().err
    only_bad = write_jsonl(tmp_path / "bad.jsonl", [rows[1]])
    assert run_cli(["explain", "--token-rm", "fake-token:", str(only_bad), str(tmp_path / "bad.html")]) == 1
    assert not (tmp_path / "bad.html").exists()


HAS_TOKEN_RM = importlib.util.find_spec("finealign.rewards.token_rm") is not None


@pytest.mark.skipif(not HAS_TOKEN_RM, reason="finealign.rewards.token_rm (the token-rm scorer) is not there yet")
def test_explain_cli_real_token_rm_tiny(tmp_path):
    """End to end through the real ``token-rm:`` scorer on a fresh tiny token RM."""
    from finealign.models.token_rm import new_token_rm

    model, tok = new_token_rm("tiny-random", mode="full", seed=0)
    model.save(tmp_path / "rm", tok)
    edits = write_jsonl(tmp_path / "edits.jsonl", [
        {"prompt": "Capital of France?", "original": "It is Lyon, I think.", "edited": "It is Paris, I think."},
        {"prompt": "2+2?", "original": "5", "edited": "4"}])
    out = tmp_path / "rm.html"
    assert run_cli(["explain", "--token-rm", str(tmp_path / "rm"), str(edits), str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count('<div class="item">') == 2
    # the scorer's offsets index the response: the outlined tokens spell the changed words
    outlined = re.findall(r'class="t c"[^>]*>([^<]*)</span>', page)[1:]  # [0] is the legend sample
    assert "".join(outlined).replace(" ", "") == "LyonParis54"
    # every token got a reward in the tooltip
    assert page.count("title=\"reward ") >= 2 * len("It is Lyon, I think.".split())


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TOKEN_RM, reason="finealign.rewards.token_rm (the token-rm scorer) is not there yet")
def test_explain_default_model_token_rm_on_defacto(tmp_path, shared_data, capsys):
    """A fresh LoRA token RM on SmolLM2 explains two real DeFacto edits; outlines match the alignment."""
    from finealign.core.align import diff_char_spans
    from finealign.data.adapters import load_dataset
    from finealign.models.token_rm import new_token_rm

    model, tok = new_token_rm("smollm2-135m-instruct", seed=0)
    model.save(tmp_path / "rm", tok)
    recs = load_dataset("defacto-val")[:2]
    edits = write_jsonl(tmp_path / "edits.jsonl", [r.to_obj() for r in recs])
    out = tmp_path / "defacto.html"
    assert run_cli(["explain", "--token-rm", str(tmp_path / "rm"), str(edits), str(out), "--terminal",
                    "--center", "median"]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count('<div class="item">') == 2
    # each outlined token overlaps a changed word; each changed word has an outlined token
    outlined = re.findall(r'class="t c"[^>]*>([^<]*)</span>', page)[1:]
    changed_words = [t[a:b] for r in recs for t, sp in zip((r.original, r.edited), diff_char_spans(r.original, r.edited))
                     for a, b in sp]
    import html as _html
    joined = "".join(_html.unescape(o) for o in outlined)
    for w in changed_words:
        assert w.replace(" ", "") in joined.replace(" ", ""), w
    assert capsys.readouterr().out.count("original") >= 2


def test_explain_marks_the_stop_token_of_an_original_that_stopped_too_early():
    """As in training (models.token_rm_data): an edit that inserts after the original's last word marks the
    original's stop token as changed; it is drawn as a return sign after the text."""
    from finealign.cli.explain import build_items
    from finealign.data.records import EditRecord
    from finealign.report.heatmap import STOP_MARK, render_html
    from finealign.rewards.base import load_scorer

    prompt = "Write one sentence about dogs. Use the words 'loyal' and 'park'. Do not use the words just, really and very."
    recs = [EditRecord(prompt=prompt, original="Dogs run.", edited="Dogs run and loyal and park.")]
    items, skipped = build_items(recs, load_scorer("sim:constraints"))
    assert not skipped
    original = items[0].panels[0]
    assert original.scores.offsets[-1] == (9, 9) and original.changed[-1] == 1 and sum(original.changed) == 1
    assert STOP_MARK in render_html(items)
