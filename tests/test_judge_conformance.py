"""Judge conformance: the endpoint judge against a local fake OpenAI-compatible endpoint (``fake_judge.py``)
in every reply style (letter first or later, bold, JSON, reasoning, another language, with and without
log-probabilities, a server that refuses them; no streaming): the measured win rate must equal the one the
fake judge's true preferences imply, and every verdict's path is counted. Then the answer parser on each
format, the letter-token reading, the bad inputs of issue 27 and the verdict cache's identity checks."""

from __future__ import annotations

import json
import math

import pytest

from conftest import serve_root
from fake_judge import P_WIN, STYLES, FakeJudge, quality
from finealign.eval import judges
from finealign.eval.judges import JudgeError, VerdictCache, judge_orders, load_judge
from finealign.eval.verdicts import letter_probability, parse_verdict
from finealign.eval.winrate import WinrateConfig, run_winrate

# model qualities vs reference qualities on 8 prompts: 4 wins, 2 losses, 2 ties
OUT_Q = [5, 3, 7, 2, 6, 6, 1, 9]
REF_Q = [4, 5, 7, 1, 2, 8, 1, 3]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fake():
    f = FakeJudge()
    with serve_root(f.app) as root:
        f.url = root + "/v1"
        yield f


@pytest.fixture()
def sides(tmp_path):
    prompts = [f"Question {i}?" for i in range(8)]
    o = _jsonl(tmp_path / "outs.jsonl", [{"prompt": p, "completion": f"model answer q={q} " + "x" * (3 * i)}
                                         for i, (p, q) in enumerate(zip(prompts, OUT_Q))])
    r = _jsonl(tmp_path / "ref.jsonl", [{"prompt": p, "completion": f"reference q={q}"} for p, q in zip(prompts, REF_Q)])
    return o, r


def _truth(o, r):
    """The win rate the fake judge's true preferences imply: higher quality wins, equal is a tie (1/2)."""
    rows = [(quality(json.loads(a)["completion"]), quality(json.loads(b)["completion"]))
            for a, b in zip(o.read_text().splitlines(), r.read_text().splitlines())]
    prefs = [1.0 if x > y else 0.0 if x < y else 0.5 for x, y in rows]
    return sum(prefs) / len(prefs), sum(p == 0.5 for p in prefs), prefs


@pytest.mark.parametrize("style", sorted(STYLES))
def test_win_rate_equals_the_true_one_in_every_reply_style(style, fake, sides, tmp_path):
    o, r = sides
    truth, ties, prefs = _truth(o, r)
    fake.style, fake.fail, fake.calls = style, None, 0
    spec = f"openai:{fake.url},model=fake,retries=0,backoff=0,concurrency=2"
    res = run_winrate(WinrateConfig(out=tmp_path / "hard", outputs=o, reference_outputs=r, judge=spec,
                                    judge_check="none", n_boot=20))
    assert res.win_rate == truth and res.ties == ties  # 0.625 here: (4 wins + 2 ties / 2) / 8
    assert res.position_disagreement == 0.0  # the fake judge has no position bias, and none is reported
    lp = STYLES[style][2] in (True, "no-top")
    decided = 2 * (len(prefs) - ties)  # ordered comparisons with a winner (both orders of 6 pairs)
    assert res.judge_paths == {"logprob": decided if lp else 0, "parsed": 0 if lp else decided, "tie": 2 * ties,
                               "score": 0}
    assert not any(b.get("stream") for b in fake.bodies[-4:])  # no streaming
    md = (tmp_path / "hard" / "results.md").read_text()
    assert f"{2 * len(prefs)} verdicts: {res.judge_paths['logprob']} log-probability" in md
    if STYLES[style][2] is True:  # soft preferences: the letter token's probabilities, read where the letter is
        soft = run_winrate(WinrateConfig(out=tmp_path / "soft", outputs=o, reference_outputs=r, judge=spec,
                                         judge_check="none", preference="soft", n_boot=20))
        want = sum(P_WIN if p == 1 else 1 - P_WIN if p == 0 else 0.5 for p in prefs) / len(prefs)
        assert soft.win_rate == pytest.approx(want, abs=1e-9)  # (4 * 0.8 + 2 * 0.2 + 2 * 0.5) / 8 = 0.575


def test_the_issue_case_a_judge_that_prefers_the_reference_in_both_orders(fake, tmp_path):
    """Issue 27: replies ``**B**`` / ``**A**`` with log-probabilities, the reference better on every prompt. Read at
    the first token (``**``) this was win rate 0.5, p = 0.622 everywhere, 100% position disagreement."""
    prompts = [f"Q{i}" for i in range(6)]
    o = _jsonl(tmp_path / "o.jsonl", [{"prompt": p, "completion": "q=1"} for p in prompts])
    r = _jsonl(tmp_path / "r.jsonl", [{"prompt": p, "completion": "q=2"} for p in prompts])
    fake.style, fake.fail = "bold", None
    res = run_winrate(WinrateConfig(out=tmp_path / "w", outputs=o, reference_outputs=r,
                                    judge=f"openai:{fake.url},model=fake,retries=0", judge_check="none", n_boot=20))
    assert res.win_rate == 0.0 and res.position_disagreement == 0.0 and res.judge_paths["logprob"] == 12
    rows = [json.loads(x) for x in (tmp_path / "w" / "pairs.jsonl").read_text().splitlines()]
    assert [x["p_output_first"] for x in rows] == pytest.approx([1 - P_WIN] * 6)  # 0.2, not 0.622
    assert {x["path_output_first"] for x in rows} == {"logprob"}


# --------------------------------------------------------------------------------------------- the parser


@pytest.mark.parametrize("text, want", [
    ("A", "A"), (" B", "B"), ("b.", "B"), ("(B)", "B"), ("**B**", "B"), ("[[B]]", "B"), ("Answer: B", "B"),
    ("Answer - A", "A"), ("answer: (a)", "A"), ("Output (b)", "B"), ("Response B", "B"), ("Answer A is better.", "A"),
    ('{"answer": "B"}', "B"), ('```json\n{"winner": "Response A"}\n```', "A"),
    ('{"reasoning": "A is short but B is right", "choice": "B"}', "B"),
    ("Answer A is concise but wrong; Answer B is correct. Final answer: B", "B"),
    ("Answer A reads better, but Answer B is right. Therefore the better answer is (B).", "B"),
    ("**Answer:** A", "A"), ("Verdict: [[A]]", "A"), ("I choose B", "B"), ("B is worse", "A"),
    ("La respuesta B es mejor.", "B"), ("答案是 B", "B"), ("A resposta B é melhor", "B"), ("I think A", "A"),
    ("[[C]]", "tie"), ("Both answers are equally good.", "tie"), ("Neither.", "tie"), ("Answer: both", "tie"),
    ("Neither A nor B is correct.", "tie"), ('{"answer": "tie"}', "tie"), ("I'm sorry, but I can't help with that.", "tie"),
    ("", None), ("   ", None), ("AAAA", None), ("A good question.", None), ("Die erste Antwort ist besser.", None),
])
def test_one_parser_for_every_common_format(text, want):
    got = parse_verdict(text)
    assert got.verdict == want, got
    if want in ("A", "B") and got.span is not None:
        assert text[got.span[0]].upper() == want  # the span points at the letter that decided


def test_letter_probability_reads_the_letter_token_not_the_first():
    # "**B**": first token "**" offers A/B at -3.0/-3.5 (P(A) = 1 / (1 + e^-0.5) = 0.6225 there); the letter token
    # offers A at ln 0.25 and B at ln 0.75: P(A) = 0.25 / (0.25 + 0.75) = 0.25
    junk = [{"token": "A", "logprob": -3.0}, {"token": "B", "logprob": -3.5}]
    content = [{"token": "**", "logprob": -0.1, "top_logprobs": [{"token": "**", "logprob": -0.1}, *junk]},
               {"token": "B", "logprob": math.log(0.75), "top_logprobs": [{"token": "B", "logprob": math.log(0.75)},
                                                                          {"token": " A", "logprob": math.log(0.25)}]},
               {"token": "**", "logprob": -0.1, "top_logprobs": junk}]
    span = parse_verdict("**B**").span
    assert letter_probability(content, "**B**", span) == pytest.approx(0.25)
    assert letter_probability(content, "**B**", None) is None  # no letter located: the text decides
    # tokens that do not spell the text: no token is known to hold the verdict, so no probability (the parsed
    # text decides), never the first bare A/B token
    assert letter_probability(content, "<<B>>", (2, 3)) is None


# the replies a new user's trial found read as confident verdicts: each refused (None) or read right
@pytest.mark.parametrize("text, allowed", [
    ("To evaluate, I'll consider helpfulness. Answer A is", {None}),
    ("Both answers address the question. However, Answer B", {None}),  # not a tie
    ("Both A and B have flaws, but B is slightly better.", {"B"}),  # a preference, not a tie
    ("Neither A nor B is better.", {"tie"}), ("Both A and B are fine, but A is closer.", {None, "A"}),
    ("A is accurate, B is not.", {None, "A"}), ("A is concise but B is detailed.", {None}),
    ("A: 3/10, B: 8/10", {None, "B"}), ("B is not better.", {None, "A"}), ("Not A", {None, "B"}),
    ("B has an error.", {None}), ("A is wrong, B is wrong too.", {None}), ("La respuesta B no es mejor.", {None, "A"}),
    ("Let me compare the two answers carefully. Answer A", {None}),
])
def test_ambiguous_replies_are_refused_or_read_right(text, allowed):
    assert parse_verdict(text).verdict in allowed, parse_verdict(text)


@pytest.mark.parametrize("text, want", [
    ("Let me compare the two answers carefully. Answer A", None), ("A is better than B on style, but", None),
    ("Both answers are equally", None), ("B", "B"), ("**A**", "A"), ("Reasoning ... Final answer: B", "B"),
])
def test_a_reply_cut_at_max_tokens_counts_only_with_an_explicit_verdict(text, want):
    assert parse_verdict(text, truncated=True).verdict == want


def test_no_probability_from_a_letter_that_is_only_mentioned():
    # "Answer A is concise but" has no explicit verdict; its " A" token offers A at ln 0.9: never read as P(A) = 0.9
    text = "Answer A is concise but"
    toks = ["Answer", " A", " is", " concise", " but"]
    content = [{"token": t, "logprob": -0.1, "top_logprobs": [{"token": " A", "logprob": math.log(0.9)},
                                                               {"token": " B", "logprob": math.log(0.1)}]} for t in toks]
    assert parse_verdict(text).span is None
    assert letter_probability(content, text, parse_verdict(text).span) is None
    # the span of a verdict that sits on a non-letter token (a server whose tokens disagree): no probability
    assert letter_probability(content, "Answer A is concise but", (1, 2)) is None


def test_a_truncated_reply_is_one_error_that_says_raise_max_tokens(fake):
    fake.fail, fake.calls = "cut", 0
    j = load_judge(f"openai:{fake.url},model=fake,retries=0,parse_retries=0,max_tokens=12")
    with pytest.raises(JudgeError) as e:
        j.compare(["q"], ["q=1"], ["q=2"])
    msg = str(e.value)
    assert "\n" not in msg and "cut at max_tokens=12" in msg and "raise max_tokens" in msg
    assert "Let me compare the two answers carefully. Answer A" in msg
    fake.fail = None


# --------------------------------------------------------------------------------------------- bad input


def test_429_and_500_are_retried_with_backoff_then_one_error_naming_the_pair(fake, monkeypatch):
    slept = []
    monkeypatch.setattr(judges, "_pause", lambda seconds, stop: slept.append(seconds))
    for code in ("429", "500"):
        fake.style, fake.fail, fake.calls = "bare", code, 0
        slept.clear()
        j = load_judge(f"openai:{fake.url},model=fake,retries=3,backoff=0.5,concurrency=1")
        with pytest.raises(JudgeError) as e:
            j.compare(["Name a colour."], ["red"], ["blue"])
        msg = str(e.value)
        assert "\n" not in msg and f"HTTP {code}" in msg and "after 4 attempts" in msg
        assert "prompt 'Name a colour.' (answer A 'red', answer B 'blue')" in msg
        assert fake.calls == 4 and slept == [0.0, 0.0, 0.0]  # the server's Retry-After: 0 wins over 0.5 * 2**k
    fake.fail = None


def test_backoff_is_exponential_without_retry_after(monkeypatch):
    from finealign.edits.editors import backoff_delay

    assert [backoff_delay(k, 0.5, 4.0) for k in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]  # 0.5 * 2**k, capped at 4


@pytest.mark.parametrize("fail, why", [("empty", "an empty reply"),
                                       ("foreign", "unparsable answer 'Die erste Antwort ist besser.'")])
def test_empty_and_foreign_replies_fail_in_one_line(fail, why, fake):
    fake.fail, fake.calls = fail, 0
    j = load_judge(f"openai:{fake.url},model=fake,retries=5,backoff=0")
    with pytest.raises(JudgeError) as e:
        j.compare(["q"], ["a"], ["b"])
    assert why in str(e.value) and "\n" not in str(e.value)
    assert fake.calls == 2  # asked once more (parse_retries=1), not retries + 1 = 6 paid requests
    fake.fail = None


def test_after_a_fatal_pair_no_new_request_is_started(fake):
    # pair 0 is refused (400: fatal); the others get 500s and would be retried 5 times with backoff 1, 2, 4, 8, 16 s
    # each; after the fatal pair the one in flight stops at its next wait and no pending pair is started
    fake.fail, fake.calls = "fatal-and-500", 0
    j = load_judge(f"openai:{fake.url},model=fake,retries=5,backoff=1,concurrency=2")
    with pytest.raises(JudgeError, match="refused the pair on prompt 'q0'.*HTTP 400"):
        j.compare([f"q{i}" for i in range(8)], ["FATAL"] + ["a"] * 7, ["b"] * 8)
    assert fake.calls <= 4  # at most: the fatal one, and two attempts of each of 1-2 pairs already in flight (not 6 x 7)
    fake.fail = None


def test_logprobs_yes_on_a_server_without_them_fails_on_the_first_reply(fake):
    fake.style, fake.fail, fake.calls = "answer-dash", None, 0  # replies without log-probabilities
    j = load_judge(f"openai:{fake.url},model=fake,logprobs=yes,retries=3,parse_retries=3,concurrency=1")
    with pytest.raises(JudgeError, match=r"no log-probabilities .*logprobs=yes") as e:
        j.compare([f"q{i}" for i in range(6)], ["q=2"] * 6, ["q=1"] * 6)
    assert "\n" not in str(e.value)
    assert fake.calls <= 2  # not re-asked (parse_retries) and no pair after the first started (not 6 x 4 = 24)


def test_unknown_judge_option_is_one_line():
    with pytest.raises(JudgeError, match=r"^judge 'openai:http://x/v1,model=m,temprature=0': unknown option\(s\) "
                                         r"temprature$"):
        load_judge("openai:http://x/v1,model=m,temprature=0")


@pytest.mark.parametrize("spec, want", [
    ("foo:bar", r"^unknown judge 'foo:bar': kind 'foo' is not pairwise, openai or a scorer kind \(.*length.*\)$"),
    ("openai:http://x/v1,model=m,retries=x", r"option retries expects an integer$"),
    ("openai:http://x/v1,model=m,timeout=soon", r"option timeout expects a number$"),
    ("openai:http://x/v1,model=m,retries=1,retries=3", r"option retries given more than once$"),
    ("openai:localhost:8000,model=m", r"^openai judge: expected openai:http\(s\)://host\[:port\]/v1,model=NAME, "
                                      r"got URL 'localhost:8000'$"),
])
def test_bad_judge_specs_are_one_clear_line(spec, want):
    with pytest.raises(JudgeError, match=want) as e:
        load_judge(spec)
    assert "\n" not in str(e.value) and "--base-url" not in str(e.value) and "a int" not in str(e.value)


def test_cached_verdicts_of_another_judge_or_template_are_never_reused(fake, tmp_path, monkeypatch):
    fake.style, fake.fail = "bare", None
    prompts, a, b = ["p1", "p2"], ["q=3", "q=1"], ["q=2", "q=2"]
    spec = f"openai:{fake.url},model=fake,retries=0"
    cache = VerdictCache(tmp_path / "v.jsonl")
    fake.calls = 0
    first = judge_orders(load_judge(spec), prompts, a, b, cache=cache, judge_id="j")
    assert fake.calls == 4 and first.first == [pytest.approx(P_WIN), pytest.approx(1 - P_WIN)]
    fake.calls = 0
    judge_orders(load_judge(spec), prompts, a, b, cache=cache, judge_id="j")
    assert fake.calls == 0  # same judge, same template: all four from the cache
    judge_orders(load_judge(spec + ",max_tokens=64"), prompts, a, b, cache=cache, judge_id="j")
    assert fake.calls == 4  # another judge setting (same label): asked again
    fake.calls = 0
    monkeypatch.setattr(judges, "PAIRWISE_TEMPLATE", judges.PAIRWISE_TEMPLATE.replace("one letter", "a letter"))
    judge_orders(load_judge(spec), prompts, a, b, cache=cache, judge_id="j")
    assert fake.calls == 4  # the template text changed (same version string): asked again
    cache.close()
    lines = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and len({x["template"] for x in lines}) == 2 and len({x["identity"] for x in lines}) == 3
    # a line whose identity was edited is not read back even under its own key
    lines[0]["identity"] = "openai:other"
    _jsonl(tmp_path / "w.jsonl", lines)
    key = lines[0]["key"]
    assert VerdictCache(tmp_path / "w.jsonl").get(key, lines[1]["identity"], lines[1]["template"]) is None
