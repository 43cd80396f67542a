"""eval-rm: metrics on hand-made benchmarks, the length baseline beside the scorer, the score cache
(resume), built-in benchmarks on small subsets, bad input."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from finealign.errors import FinealignError
from finealign.eval.benchmarks import load_benchmark, take
from finealign.eval.rm_eval import EvalConfig, run_eval
from finealign.rewards import Scorer, register_scorer


class CountB(Scorer):
    """Score = number of 'b' characters; counts the responses it scored."""

    name = "count-b"
    scored = 0

    def score(self, prompts, responses):
        CountB.scored += len(responses)
        return [float(r.count("b")) for r in responses]


@register_scorer("test-count-b")
def _count_b(arg=None, **_):
    return CountB()


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def pairs(tmp_path):
    # scorer (count of b) vs length:
    # 1: chosen "bb" vs "a":     scorer agrees (2>0), length agrees (2>1)
    # 2: chosen "b" vs "aaaa":   scorer agrees (1>0), length disagrees (1<4)
    # 3: chosen "a" vs "b", p_chosen 0.3 -> majority is rejected "b": scorer agrees (0<1); length tie (1=1) -> 0.5
    # 4: chosen "xx" vs "yy":    scorer tie (0=0) -> 0.5; length tie -> 0.5
    rows = [{"prompt": "q1", "chosen": "bb", "rejected": "a", "subset": "s1"},
            {"prompt": "q2", "chosen": "b", "rejected": "aaaa", "subset": "s1"},
            {"prompt": "q3", "chosen": "a", "rejected": "b", "p_chosen": 0.3, "subset": "s2"},
            {"prompt": "q4", "chosen": "xx", "rejected": "yy", "subset": "s2"}]
    return _write(tmp_path / "pairs.jsonl", rows)


def test_pair_file_accuracy_by_subset_and_length_baseline(pairs, tmp_path):
    res = run_eval(EvalConfig(scorer="test-count-b", benchmark=str(pairs), out=tmp_path / "o", n_boot=50))
    s, ln = res.scorer, res.length
    assert s["overall"]["accuracy"] == pytest.approx(3.5 / 4)  # 1 + 1 + 1 + 0.5
    assert ln["overall"]["accuracy"] == pytest.approx(2.0 / 4)  # 1 + 0 + 0.5 + 0.5
    assert s["overall"]["ties"] == 1
    assert s["by_subset"]["s1"]["accuracy"] == 1.0 and s["by_subset"]["s2"]["accuracy"] == 0.75
    assert ln["by_subset"]["s1"]["accuracy"] == 0.5
    js = json.loads((tmp_path / "o" / "results.json").read_text())
    assert js["metrics"]["scorer"]["overall"]["n"] == 4 and js["kind"] == "pairs"
    md = (tmp_path / "o" / "results.md").read_text()
    assert "length accuracy" in md and "| s2 | 2 |" in md


def test_cache_resumes_and_dedupes(pairs, tmp_path):
    CountB.scored = 0
    cfg = EvalConfig(scorer="test-count-b", benchmark=str(pairs), out=tmp_path / "o", n_boot=20, batch_size=3)
    first = run_eval(cfg)
    assert CountB.scored == 8 and first.scored_now == 8
    again = run_eval(cfg)
    assert CountB.scored == 8 and again.scored_now == 0  # everything came from the cache
    assert again.scorer == first.scorer
    lines = (tmp_path / "o" / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 8 and {json.loads(x)["scorer"] for x in lines} == {"test-count-b"}
    # a torn last line (killed run) is dropped and that unit is rescored
    cache = tmp_path / "o" / "scores.jsonl"
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    third = run_eval(cfg)
    assert third.scored_now == 1 and third.scorer == first.scorer


def test_duplicate_responses_scored_once(tmp_path):
    CountB.scored = 0
    rows = [{"prompt": "q", "chosen": "same b", "rejected": f"other {i}"} for i in range(3)]
    path = _write(tmp_path / "dup.jsonl", rows)
    res = run_eval(EvalConfig(scorer="test-count-b", benchmark=str(path), out=tmp_path / "o", n_boot=20))
    assert CountB.scored == 4 and res.units == 4  # 1 shared chosen + 3 rejected


def test_rating_file_correlations(tmp_path):
    # count of b = 0, 1, 2, 3 against scores 1, 2, 3, 5: monotone -> Spearman = Kendall = 1
    rows = [{"prompt": "q", "response": "b" * i + "a" * (10 - i), "score": s} for i, s in enumerate([1, 2, 3, 5])]
    path = _write(tmp_path / "ratings.jsonl", rows)
    res = run_eval(EvalConfig(scorer="test-count-b", benchmark=str(path), out=tmp_path / "o", n_boot=20))
    assert res.scorer["overall"]["spearman"] == pytest.approx(1.0)
    assert res.scorer["overall"]["kendall"] == pytest.approx(1.0)
    # every response has 10 characters: the length baseline is constant, so undefined
    assert res.length["overall"]["spearman"] != res.length["overall"]["spearman"]  # NaN


def test_take_first_and_nested_seeded_sample():
    items = list(range(50))
    assert take(items, 5) == [0, 1, 2, 3, 4]
    small, big = take(items, 5, sample_seed=1), take(items, 20, sample_seed=1)
    assert set(small) <= set(big) and len(set(big)) == 20 and small != [0, 1, 2, 3, 4]


def test_builtin_benchmarks_small(shared_data):
    b = load_benchmark("hh-harmless", limit=7)
    assert b.kind == "pairs" and len(b.items) == 7 and b.total > 2000
    a = load_benchmark("alpaca-eval", limit=30, sample_seed=0)
    assert len(a.items) == 30 and all(0.5 <= r.p_chosen <= 1 for r in a.items)
    r = load_benchmark("prometheus-vicuna", limit=12)
    assert r.kind == "ratings" and len(r.items) == 12
    s = load_benchmark("alpaca-eval-systems", limit=2)
    systems = {x.meta["system"] for x in s.items}
    assert s.kind == "systems" and len(systems) >= 10 and set(s.leaderboard) == systems
    assert len({x.prompt_id for x in s.items}) == 2


def test_cli_end_to_end_on_tiny_model(pairs, tmp_path, shared_data):
    out = tmp_path / "ev"
    assert run_cli(["eval-rm", "--scorer", "direct:tiny-random", "--benchmark", pairs, "--out", out, "-q",
                    "--n-boot", "50"]) == 0
    js = json.loads((out / "results.json").read_text())
    assert js["metrics"]["scorer"]["overall"]["n"] == 4 and js["distinct_responses"] == 8
    assert js["metrics"]["length"]["overall"]["accuracy"] == pytest.approx(0.5)
    assert len((out / "scores.jsonl").read_text().splitlines()) == 8
    # a built-in system-ranking benchmark with the length scorer
    out2 = tmp_path / "sys"
    assert run_cli(["eval-rm", "--scorer", "length", "--benchmark", "alpaca-eval-systems", "--limit", "2",
                    "--out", out2, "-q"]) == 0
    js2 = json.loads((out2 / "results.json").read_text())
    assert js2["metrics"]["scorer"]["overall"]["n_systems"] >= 10


def test_bad_input(tmp_path, pairs):
    out = tmp_path / "bad"
    assert run_cli(["eval-rm", "--scorer", "nope:x", "--benchmark", pairs, "--out", out, "-q"]) == 1
    assert not (out / "results.json").exists()
    assert run_cli(["eval-rm", "--scorer", "length", "--benchmark", "no-such-bench", "--out", out, "-q"]) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": ""}\n')
    assert run_cli(["eval-rm", "--scorer", "length", "--benchmark", bad, "--out", out, "-q"]) == 1
    edits = _write(tmp_path / "edits.jsonl", [{"prompt": "q", "original": "a", "edited": "b"}])
    with pytest.raises(FinealignError, match="pairs"):
        load_benchmark(str(edits))
    assert not (out / "results.json").exists()
    with pytest.raises(FinealignError):
        EvalConfig(scorer="length", benchmark="x", out=out, limit=0)


@pytest.mark.slow
def test_default_model_direct_on_three_hh_pairs(tmp_path, shared_data):
    """The real default model on 3 HH pairs (6 responses, cut at 400 characters): a complete result
    with the length baseline beside it; a rerun comes entirely from the cache."""
    cfg = EvalConfig(scorer="direct:smollm2-135m-instruct", benchmark="hh-harmless", out=tmp_path / "o", limit=3,
                     max_chars=400, n_boot=100)
    res = run_eval(cfg)
    assert res.scorer["overall"]["n"] == 3 and res.length["overall"]["n"] == 3
    assert 0.0 <= res.scorer["overall"]["accuracy"] <= 1.0
    assert run_eval(cfg).scored_now == 0
