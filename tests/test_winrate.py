"""``finealign eval winrate``: judges (scorer, local pairwise LM, OpenAI-compatible endpoint against a real
``finealign serve`` on loopback), both-orders averaging, the judge check, bad inputs, resume, and the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from conftest import run_cli
from finealign.errors import ConfigError, FinealignError
from finealign.eval.judges import (Judge, JudgeError, LocalPairwiseJudge, OpenAIJudge, VerdictCache, judge_both_orders,
                                   load_judge, pairwise_messages, parse_answer)
from finealign.eval.winrate import WinrateConfig, run_winrate
from test_serve import serve_in_thread

PROMPTS = ["Say hi.", "Name a colour.", "What is 2+2?", "Write a haiku."]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.fixture()
def sides(tmp_path):
    """Outputs (TRL JSONL) and reference (AlpacaEval JSON) whose lengths give 2 wins, 1 loss, 1 tie under
    the ``length`` judge; a judge-check file where the longer response is always the chosen one."""
    outs = ["hello there", "red", "four, since two and two make four", "abc"]
    refs = ["hi", "blue, a calm colour", "4", "xyz"]
    o = _jsonl(tmp_path / "outs.jsonl", [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, outs)])
    r = tmp_path / "ref.json"
    r.write_text(json.dumps([{"instruction": p, "output": c, "generator": "ref"} for p, c in zip(PROMPTS, refs)]))
    chk = _jsonl(tmp_path / "check.jsonl", [{"prompt": f"q{i}", "chosen": "a long and careful answer " * (1 + i % 3),
                                             "rejected": "short"} for i in range(20)])
    return o, r, chk


# --------------------------------------------------------------------------------- judges, offline


def test_parse_answer():
    assert parse_answer("A") == 1.0 and parse_answer(" b.") == 0.0
    assert parse_answer("**A**") == 1.0 and parse_answer("Answer B") == 0.0 and parse_answer("(A) is better") == 1.0
    assert parse_answer("Both are fine") == 0.5  # an explicit tie (tests/test_judge_conformance.py has the rest)
    for garbage in (None, "", "AAAA", "Let me think about it."):
        assert parse_answer(garbage) is None


def test_pairwise_messages_hold_both_answers_in_order():
    m = pairwise_messages([{"role": "user", "content": "Q?"}], "first text", "second text")
    assert m[0]["role"] == "system" and m[1]["role"] == "user"
    body = m[1]["content"]
    assert "Q?" in body and body.index("first text") < body.index("second text")
    assert "[Answer A]\nfirst text" in body and "[Answer B]\nsecond text" in body


class _Biased(Judge):
    """Prefers whatever is shown first with P = 0.9, unless the texts' lengths differ by more than 5."""

    batch_size = 3

    def __init__(self):
        self.calls = []

    def compare(self, prompts, first, second):
        self.calls.append(len(prompts))
        return [0.9 if abs(len(a) - len(b)) <= 5 else (1.0 if len(a) > len(b) else 0.0) for a, b in zip(first, second)]


def test_both_orders_are_asked_averaged_and_cached(tmp_path):
    from finealign.core.winrate import combine_orders

    j = _Biased()
    prompts, a, b = ["p"] * 4, ["aa", "a long long answer", "x", "bb"], ["bb", "y", "a long long answer", "cc"]
    cache = VerdictCache(tmp_path / "v.jsonl")
    p1, p2 = judge_both_orders(j, prompts, a, b, cache=cache, judge_id="biased")
    cache.close()
    assert sum(j.calls) == 8 and max(j.calls) <= 3  # 4 pairs x 2 orders, in batches of 3
    # pair 0: a first -> 0.9; a second -> 1 - 0.9 = 0.1: the orders disagree; a real preference (pair 1) does not
    assert p1 == pytest.approx([0.9, 1.0, 0.0, 0.9]) and p2 == pytest.approx([0.1, 1.0, 0.0, 0.1])
    pref, dis = combine_orders(p1, p2, "hard")
    assert pref.tolist() == [0.5, 1.0, 0.0, 0.5] and dis.tolist() == [True, False, False, True]
    # a rerun takes every verdict from the cache
    j2 = _Biased()
    again = judge_both_orders(j2, prompts, a, b, cache=VerdictCache(tmp_path / "v.jsonl"), judge_id="biased")
    assert j2.calls == [] and again == (p1, p2)
    assert len(_read(tmp_path / "v.jsonl")) == 8


def test_scorer_judge_is_symmetric_and_asked_once():
    j = load_judge("length")
    assert j.symmetric
    p1, p2 = judge_both_orders(j, ["p", "p", "p"], ["long one", "s", "eq"], ["s", "long one", "qe"])
    assert p1 == [1.0, 0.0, 0.5] and p2 == p1
    # empty answers lose to any text and tie with each other, without reaching the scorer
    direct = load_judge("direct:tiny-random,device=cpu")
    assert direct.compare(["q", "q", "q"], ["", "text", " "], ["text", "", ""]) == [0.0, 1.0, 0.5]


def test_direct_scorer_judge_on_tiny():
    j = load_judge("direct:tiny-random,device=cpu")
    p = j.compare(["Say hi."] * 2, ["hello", "hi there friend"], ["hi there friend", "hello"])
    assert p[0] + p[1] == 1.0 and set(p) <= {0.0, 1.0}  # one score comparison, seen from both sides


def test_local_pairwise_judge_on_tiny(tiny):
    j = LocalPairwiseJudge(tiny, batch_size=2)
    prompts, a, b = ["Say hi.", "What is 2+2?", "Name a colour."], ["hello", "4", "red"], ["hey", "five", "blue"]
    p = j.compare(prompts, a, b)
    assert len(p) == 3 and all(0.0 < x < 1.0 for x in p)
    with pytest.raises(JudgeError, match="--max-chars"):  # the tiny model's window is 1024 tokens
        j.compare(["q"], ["word " * 800], ["b"])
    # batching and padding do not change a verdict
    assert [j.compare([q], [x], [y])[0] for q, x, y in zip(prompts, a, b)] == pytest.approx(p, abs=1e-5)
    p1, p2 = judge_both_orders(j, prompts, a, b)
    assert p1 == pytest.approx(p, abs=1e-5)
    assert p2 == pytest.approx([1 - x for x in j.compare(prompts, b, a)], abs=1e-5)


def _rig_answer_a(model, tok):
    """Make a (fresh) tiny model answer the token 'A' whatever it reads."""
    a = tok("A", add_special_tokens=False)["input_ids"][0]
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-10.0)
        head.bias[a] = 10.0
    model.lm_head = head
    return model, tok


def test_position_biased_local_judge_gives_ties_and_full_disagreement(tiny_fresh, sides, tmp_path):
    judge = LocalPairwiseJudge(_rig_answer_a(*tiny_fresh), name="pairwise:rigged")
    o, r, chk = sides
    res = run_winrate(WinrateConfig(out=tmp_path / "o", outputs=o, reference_outputs=r, judge="pairwise:rigged",
                                    judge_check=str(chk), n_boot=50), judge=judge)
    assert res.position_disagreement == 1.0 and res.ties == 4 and res.win_rate == 0.5
    assert res.judge_check.accuracy == 0.5 and not res.judge_check.evidence
    assert "not evidence" in (tmp_path / "o" / "results.md").read_text()


# --------------------------------------------------------------------------------- endpoint judge


@pytest.fixture(scope="module")
def rigged_server():
    """``finealign serve``'s app over a tiny model that always answers 'A', on loopback."""
    from finealign.models import load_model
    from finealign.serve.openai_server import create_app

    model, tok = _rig_answer_a(*load_model("tiny-random", device="cpu"))
    with serve_in_thread(create_app(model=model, tokenizer=tok, served_name="judge")) as url:
        yield url


@pytest.fixture(scope="module")
def tiny_server(tiny):
    from finealign.serve.openai_server import create_app

    model, tok = tiny
    with serve_in_thread(create_app(model=model, tokenizer=tok, served_name="tiny-random")) as url:
        yield url


def test_endpoint_judge_against_finealign_serve(rigged_server):
    j = load_judge(f"openai:{rigged_server},model=judge,max_tokens=1,retries=0")
    assert isinstance(j, OpenAIJudge)
    p1, p2 = judge_both_orders(j, ["Say hi.", "2+2?"], ["hello", "4"], ["hey", "5"])
    j.close()
    assert p1 == [1.0, 1.0]  # the parsed 'A' (the server gives no log-probabilities)
    assert p2 == [0.0, 0.0]  # 'A' again with the order swapped: the other text wins


def test_endpoint_judge_garbage_from_finealign_serve_fails_clearly(tiny_server):
    # the untrained tiny model answers noise: retried, then one clear error
    j = load_judge(f"openai:{tiny_server},model=tiny-random,max_tokens=3,retries=1,backoff=0")
    with pytest.raises(JudgeError, match=r"after 2 attempts: unparsable answer"):
        j.compare(["Say hi."], ["hello"], ["hey"])


def test_endpoint_judge_wrong_model_is_refused_at_once(rigged_server):
    j = load_judge(f"openai:{rigged_server},model=nope,retries=3,backoff=0")
    with pytest.raises(JudgeError, match="HTTP 404"):
        j.compare(["q"], ["a"], ["b"])


class _Flaky:
    """An OpenAI-compatible endpoint: logprobs answers (P(A) = 0.7), with scripted failures."""

    def __init__(self):
        self.calls = 0
        self.mode = "ok"
        self.lock = threading.Lock()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(req: Request):
            body = await req.json()
            with self.lock:
                self.calls += 1
                n = self.calls
            if self.mode == "garbage" or (self.mode == "garbage-after-3" and n > 3):
                return JSONResponse(_reply("Let me think about it.", None))
            if self.mode == "no-logprobs":
                if body.get("logprobs"):
                    return JSONResponse({"error": {"message": "logprobs are not supported"}}, status_code=400)
                return JSONResponse(_reply("B", None))
            if self.mode == "500-once" and n == 1:
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
            lp = {"content": [{"token": "A", "logprob": -0.356675, "bytes": None,  # ln 0.7
                               "top_logprobs": [{"token": "A", "logprob": -0.356675, "bytes": None},
                                                {"token": "B", "logprob": -1.203973, "bytes": None}]}]}  # ln 0.3
            assert body.get("logprobs") is True
            return JSONResponse(_reply("A", lp))

        self.app = app


def _reply(text, logprobs):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                         "finish_reason": "stop"}]}


def test_endpoint_judge_logprobs_retries_and_resume(sides, tmp_path):
    o, r, _ = sides
    fake = _Flaky()
    with serve_in_thread(fake.app) as url:
        spec = f"openai:{url},model=m,retries=2,backoff=0,concurrency=1"
        fake.mode = "500-once"
        j = load_judge(spec)
        assert j.compare(["q"], ["a"], ["b"]) == pytest.approx([0.7])  # 0.7 / (0.7 + 0.3), after one retry
        assert fake.calls == 2
        fake.calls, fake.mode = 0, "no-logprobs"  # logprobs refused: asked again without, the answer parsed
        assert load_judge(spec).compare(["q"], ["a"], ["b"]) == [0.0] and fake.calls == 2
        # a run that meets garbage after 3 answers: asked once more (parse_retries=1), then a clear error naming
        # the pair; nothing half-written
        fake.calls, fake.mode = 0, "garbage-after-3"
        cfg = dict(out=tmp_path / "o", outputs=o, reference_outputs=r, judge=spec, judge_check="none", n_boot=50)
        with pytest.raises(JudgeError, match=r"on prompt '.*' \(answer A '.*', answer B '.*'\) after 2 attempts: "
                                             r"unparsable answer 'Let me think about it.'"):
            run_winrate(WinrateConfig(**cfg))
        assert fake.calls == 5
        assert len(_read(tmp_path / "o" / "judgments.jsonl")) == 3
        assert not (tmp_path / "o" / "results.json").exists()
        # a rerun that changes only how the judge is asked (retries, timeout, concurrency, option order, a trailing
        # slash) resumes from the cache: only the 8 - 3 = 5 missing comparisons are asked
        fake.calls, fake.mode = 0, "ok"
        with pytest.raises(ConfigError, match="holds a win rate made with"):  # max_tokens changes verdicts
            run_winrate(WinrateConfig(**{**cfg, "judge": spec + ",max_tokens=64"}))
        assert fake.calls == 0
        res = run_winrate(WinrateConfig(**{**cfg, "judge": f"openai:{url}/,timeout=30,concurrency=2,model=m,retries=0"}))
        assert fake.calls == 5
    # every order says P(shown first better) = 0.7: hard verdicts disagree on every pair -> all ties
    assert res.position_disagreement == 1.0 and res.win_rate == 0.5
    assert "not validated" in res.warning


# --------------------------------------------------------------------------------- run_winrate


def test_run_winrate_with_length_judge_hand_worked(sides, tmp_path):
    o, r, chk = sides
    res = run_winrate(WinrateConfig(out=tmp_path / "o", outputs=o, reference_outputs=r, judge="length",
                                    judge_check=str(chk), n_boot=200))
    # lengths 11 vs 2 (win), 3 vs 19 (loss), 33 vs 1 (win), 3 vs 3 (tie): (1 + 0 + 1 + 0.5) / 4 = 0.625
    assert (res.wins, res.losses, res.ties, res.n) == (2, 1, 1, 4)
    assert res.win_rate == pytest.approx(0.625) and res.win_rate_se == pytest.approx(0.239357, abs=1e-6)
    assert res.position_disagreement is None  # an order-free judge
    assert res.judge_check.accuracy == 1.0 and res.judge_check.evidence and res.warning is None
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    for k in ("win_rate", "win_rate_se", "win_rate_ci", "lc_win_rate", "lc_win_rate_se", "n", "ties", "judge_check"):
        assert k in doc
    assert doc["judge_check"]["length_accuracy"] == 1.0 and not doc["judge_check"]["beats_length"]
    assert "does not beat" in (tmp_path / "o" / "results.md").read_text()  # the length judge is only length
    rows = _read(tmp_path / "o" / "pairs.jsonl")
    assert [x["preference"] for x in rows] == [1.0, 0.0, 1.0, 0.5]
    md = (tmp_path / "o" / "results.md").read_text()
    assert "62.5" in md
    # an order-free judge: one verdict per pair, from the scores; the verdicts follow length exactly, so the
    # LC win rate is not estimable and says so instead of printing a number
    assert res.judge_paths == {"logprob": 0, "parsed": 0, "tie": 0, "score": 4} == doc["judge_paths"]
    assert res.lc_status == doc["lc_status"] == "not estimable" and doc["lc_win_rate"] is None
    assert "n/a (not estimable)" in md and "separation" in md and "4 verdicts: 0 log-probability" in md


def test_a_judge_below_chance_is_not_evidence(sides, tmp_path):
    o, r, _ = sides
    chk = _jsonl(tmp_path / "inv.jsonl", [{"prompt": f"q{i}", "chosen": "ok", "rejected": "a rambling answer " * 3}
                                          for i in range(20)])
    res = run_winrate(WinrateConfig(out=tmp_path / "o", outputs=o, reference_outputs=r, judge="length",
                                    judge_check=str(chk), n_boot=50))
    assert res.judge_check.accuracy == 0.0 and not res.judge_check.evidence  # significant, but the wrong way
    assert "lies below 0.5" in res.warning and "not evidence" in (tmp_path / "o" / "results.md").read_text()


def test_mismatched_prompts_name_count_and_first(sides, tmp_path):
    o, _, _ = sides
    r = _jsonl(tmp_path / "ref.jsonl", [{"prompt": p, "completion": "x"} for p in PROMPTS[:2] + ["Other?", "Else?"]])
    with pytest.raises(FinealignError, match=r"2 of 4 prompts of .*outs.jsonl have no .* output \(first: "
                                             r".*outs.jsonl:3 'What is 2\+2\?'\).*2 of 4 prompts of .*ref.jsonl"):
        run_winrate(WinrateConfig(out=tmp_path / "o", outputs=o, reference_outputs=r, judge="length",
                                  judge_check="none"))
    # nothing was claimed: the corrected command runs in the same folder
    res = run_winrate(WinrateConfig(out=tmp_path / "o", outputs=o, reference_outputs=o, judge="length",
                                    judge_check="none", n_boot=20))
    assert res.ties == 4 and res.win_rate == 0.5


def test_bad_config_and_duplicate_outputs(sides, tmp_path):
    o, r, _ = sides
    with pytest.raises(ConfigError, match="model"):
        WinrateConfig(out=tmp_path, reference_outputs=r)
    with pytest.raises(ConfigError, match="prompts"):
        WinrateConfig(out=tmp_path, model="tiny-random", reference_outputs=r)
    dup = _jsonl(tmp_path / "dup.jsonl", [{"prompt": "a", "completion": "x"}, {"prompt": "a", "completion": "y"}])
    with pytest.raises(FinealignError, match=r"dup.jsonl:2: prompt: the same prompt as line 1"):
        run_winrate(WinrateConfig(out=tmp_path / "o", outputs=dup, reference_outputs=r, judge="length",
                                  judge_check="none"))


def test_refuses_to_resume_with_other_settings(sides, tmp_path):
    o, r, _ = sides
    base = dict(out=tmp_path / "o", outputs=o, reference_outputs=r, judge_check="none", n_boot=50)
    run_winrate(WinrateConfig(judge="length", **base))
    with pytest.raises(ConfigError, match="judge: .* made with other settings .*judge: was length, now direct:tiny"):
        run_winrate(WinrateConfig(judge="direct:tiny-random", **base))
    res = run_winrate(WinrateConfig(judge="direct:tiny-random,device=cpu", overwrite=True, **base))
    assert res.judge == "direct:tiny-random,device=cpu"


# --------------------------------------------------------------------------------- CLI


def test_cli_end_to_end_on_tiny(tmp_path, sides, capsys):
    _, _, chk = sides
    prompts = _jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    out = tmp_path / "wr"
    args = ["eval", "winrate", "--model", "tiny-random", "--reference", "tiny-random", "--prompts", prompts,
            "--temperature", "0.7", "--seed", "1", "--max-new-tokens", "8", "--judge", "pairwise:tiny-random",
            "--judge-check", chk, "--n-boot", "50", "--device", "cpu", "--out", out, "-q"]
    assert run_cli(args) == 0
    captured = capsys.readouterr()
    doc = json.loads((out / "results.json").read_text())
    assert doc["n"] == 4 and 0.0 <= doc["win_rate"] <= 1.0 and doc["judge"] == "pairwise:tiny-random"
    assert doc["judge_check"]["n"] == 20 and doc["position_disagreement"] is not None
    assert len(_read(out / "outputs.jsonl")) == 4 and len(_read(out / "reference_outputs.jsonl")) == 4
    assert "Win rate" in captured.out and "The judge's own accuracy" in captured.out
    if doc["warning"]:
        assert "not evidence" in captured.err
    n_verdicts = len(_read(out / "judgments.jsonl"))
    assert n_verdicts == 2 * 4 + 2 * 20  # both orders of every pair and of every judge-check pair
    assert run_cli(args) == 0  # the rerun resumes from the files: nothing new is judged
    assert len(_read(out / "judgments.jsonl")) == n_verdicts
    assert json.loads((out / "results.json").read_text())["win_rate"] == doc["win_rate"]
    assert run_cli(args[:-3] + ["--judge", "length", "--out", out, "-q"]) == 1  # other settings: refused
    assert "judge" in capsys.readouterr().err


def test_cli_prints_verdict_paths_and_the_lc_status(sides, tmp_path, capsys):
    o, r, chk = sides
    assert run_cli(["eval", "winrate", "--outputs", o, "--reference-outputs", r, "--judge", "length", "--judge-check",
                    chk, "--n-boot", "20", "--out", tmp_path / "o", "-q"]) == 0
    cap = capsys.readouterr()
    assert "Judge verdict paths: 4 verdicts: 0 log-probability, 0 parsed, 0 tie, 4 score." in cap.out
    assert "| length-controlled win rate | n/a (not estimable) |" in cap.out
    assert "warning: length-controlled win rate not estimable: separation" in " ".join(cap.err.split())


def test_joint_lc_over_runs_sharing_the_reference(sides, tmp_path):
    from finealign.eval.winrate import joint_lc_win_rates

    o, r, _ = sides
    o2 = _jsonl(tmp_path / "outs2.jsonl", [{"prompt": p, "completion": c} for p, c in
                                           zip(PROMPTS, ["h", "a much longer answer here", "4", "a b c d e f"])])
    for name, f in (("a", o), ("b", o2)):
        run_winrate(WinrateConfig(out=tmp_path / name, outputs=f, reference_outputs=r, judge="length",
                                  judge_check="none", n_boot=20))
    both = joint_lc_win_rates([tmp_path / "a", tmp_path / "b"])
    # the length judge's verdicts follow length without exception: the GLM has no finite fit
    assert len(both) == 2 and all(x.status == "not estimable" and "separation" in x.reason for x in both)
    for name, soft in (("a", [0.8, 0.3, 0.6, 0.5]), ("b", [0.4, 0.7, 0.5, 0.55])):  # soft verdicts: estimable
        rows = _read(tmp_path / name / "pairs.jsonl")
        _jsonl(tmp_path / name / "pairs.jsonl", [{**x, "preference": v} for x, v in zip(rows, soft)])
    both = joint_lc_win_rates([tmp_path / "a", tmp_path / "b"])
    assert all(x.estimable and "difficulty" in x.coef and 0 <= x.lc_win_rate <= 1 for x in both)
    other = _jsonl(tmp_path / "ref2.jsonl", [{"prompt": p, "completion": "other"} for p in PROMPTS])
    run_winrate(WinrateConfig(out=tmp_path / "c", outputs=o, reference_outputs=other, judge="length",
                              judge_check="none", n_boot=20))
    with pytest.raises(FinealignError, match="same reference outputs"):
        joint_lc_win_rates([tmp_path / "a", tmp_path / "c"])
