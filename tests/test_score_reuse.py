"""Work done once: labelings of the same responses with the same scorer share one score cache, so the second
one scores nothing and loads no model (the quickstart's label-dpo and label-kto stages)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import finealign.rewards as rewards
from finealign.pipeline.recipe import load_recipe
from finealign.pipeline.runner import run_recipe
from finealign.rewards.cache import shared_cache_path
from finealign.train.labeling import LabelConfig, label_file

SPEC = "flr:tiny-random,dims=relevance"


@pytest.fixture
def counted(monkeypatch):
    """``load_scorer`` wrapped: counts loads and the responses each loaded scorer scores."""
    calls = {"loads": 0, "scored": 0}
    real = rewards.load_scorer

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def score(self, prompts, responses):
            calls["scored"] += len(responses)
            return self.inner.score(prompts, responses)

    def load(spec, **kw):
        calls["loads"] += 1
        return Counting(real(spec, **kw))

    monkeypatch.setattr(rewards, "load_scorer", load)
    return calls


def _responses(tmp_path: Path) -> Path:
    rows = []
    for p, texts in (("p1", ["Paris is the capital.", "I like turtles.", "Paris."]),
                     ("p2", ["Blue.", "The sky is blue because of Rayleigh scattering.", "No idea."])):
        for i, t in enumerate(texts):
            rows.append({"id": f"{p}-{i}", "prompt_id": p, "sample": i, "prompt": f"Question {p}?", "completion": t})
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_second_labeling_with_a_shared_cache_scores_nothing(tmp_path, counted):
    src = _responses(tmp_path)
    cache = shared_cache_path(tmp_path / "cache", SPEC)
    st = label_file(SPEC, src, tmp_path / "dpo.jsonl", LabelConfig(format="dpo"), cache=cache)
    assert st.written and counted == {"loads": 1, "scored": 6}
    st = label_file(SPEC, src, tmp_path / "kto.jsonl", LabelConfig(format="kto"), cache=cache)
    assert st.written and counted == {"loads": 1, "scored": 6}  # no model loaded, no response scored again
    dpo = {r["id"]: r["meta"] for r in map(json.loads, (tmp_path / "dpo.jsonl").read_text().splitlines())}
    kto = {tuple(r["id"].rsplit(":", 1)): r["meta"]["score"]
           for r in map(json.loads, (tmp_path / "kto.jsonl").read_text().splitlines())}
    by_sample = {}
    for pid, m in dpo.items():
        by_sample[(pid, str(m["chosen_sample"]))] = m["chosen_score"]
        by_sample[(pid, str(m["rejected_sample"]))] = m["rejected_score"]
    shared = [(kto[k], s) for k, s in by_sample.items() if k in kto]
    assert shared and all(a == b for a, b in shared)  # the reused scores are the first pass's


def test_other_responses_or_another_cut_are_scored(tmp_path, counted):
    src = _responses(tmp_path)
    cache = shared_cache_path(tmp_path / "cache", SPEC)
    label_file(SPEC, src, tmp_path / "a.jsonl", LabelConfig(format="dpo"), cache=cache)
    rows = [json.loads(x) for x in src.read_text().splitlines()]
    full = {(r["prompt"], r["completion"]) for r in rows}
    cut = {(r["prompt"], r["completion"][:5]) for r in rows}  # "Blue." is its own cut; two cut to "Paris"
    label_file(SPEC, src, tmp_path / "b.jsonl", LabelConfig(format="kto", max_chars=5), cache=cache)
    assert counted["loads"] == 2 and counted["scored"] == 6 + len(cut - full)  # cut responses are other units
    # without a shared cache each output keeps its own: the second labeling scores again
    label_file(SPEC, src, tmp_path / "c.jsonl", LabelConfig(format="kto"))
    assert counted["scored"] == 12 + len(cut - full)


def test_cache_file_follows_the_spec():
    assert shared_cache_path("d", SPEC) == shared_cache_path("d", SPEC)
    assert shared_cache_path("d", SPEC) != shared_cache_path("d", SPEC + ",mode=pmi")


RECIPE = """\
name: reuse
stages:
  - name: generate
    type: generate
    model: tiny-random
    prompts: PROMPTS
    k: 3
    max_new_tokens: 6
  - name: label-dpo
    type: label
    input: ${stages.generate.out}
    scorer: SPEC
    format: dpo
  - name: label-kto
    type: label
    input: ${stages.generate.out}
    scorer: SPEC
    format: kto
"""


def test_recipe_label_stages_score_the_responses_once(tmp_path, counted):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": q}) + "\n"
                               for i, q in enumerate(["What is 2+2?", "Name a colour.", "Say hi."])))
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("PROMPTS", str(prompts)).replace("SPEC", SPEC))
    out = run_recipe(load_recipe(path), tmp_path / "run", log=lambda m: None)
    assert [o.status for o in out] == ["ran", "ran", "ran"]
    assert counted == {"loads": 1, "scored": 9}  # 3 prompts x 3 samples, scored by label-dpo only


def test_a_run_without_sharing_scores_each_label_stage_afresh(tmp_path, counted):
    """``run_recipe(share=False)`` (``finealign run --no-share``): the baseline of
    ``benchmarks/work_done_once.py``; the labels are the same, the work is done twice."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": q}) + "\n"
                               for i, q in enumerate(["What is 2+2?", "Name a colour.", "Say hi."])))
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("PROMPTS", str(prompts)).replace("SPEC", SPEC))
    run_recipe(load_recipe(path), tmp_path / "shared", log=lambda m: None)
    assert counted == {"loads": 1, "scored": 9}
    out = run_recipe(load_recipe(path), tmp_path / "apart", log=lambda m: None, share=False)
    assert [o.status for o in out] == ["ran", "ran", "ran"]
    assert counted == {"loads": 3, "scored": 9 + 2 * 9}  # each label stage loads the scorer and scores all 9
    assert not (tmp_path / "apart" / ".score-cache").exists()
    for stage in ("label-dpo", "label-kto"):
        same = [(tmp_path / run / stage / "labels.jsonl").read_text() for run in ("shared", "apart")]
        assert same[0] == same[1], stage


def test_win_rates_sharing_a_check_cache_judge_the_check_once(tmp_path):
    from finealign.eval.judges import load_judge
    from finealign.eval.winrate import WinrateConfig, run_winrate

    def jsonl(path, rows):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    prompts = [f"q{i}" for i in range(4)]
    ours = jsonl(tmp_path / "o.jsonl", [{"prompt": p, "completion": "a long answer " * (i + 1)} for i, p in enumerate(prompts)])
    ref = jsonl(tmp_path / "r.jsonl", [{"prompt": p, "completion": "short"} for p in prompts])
    check = jsonl(tmp_path / "chk.jsonl", [{"prompt": f"c{i}", "chosen": "a fuller answer", "rejected": "no"}
                                           for i in range(6)])

    class Counting:
        def __init__(self, judge):
            self.judge, self.asked = judge, 0

        def __getattr__(self, name):
            return getattr(self.judge, name)

        def verdicts_iter(self, prompts, a, b):
            self.asked += len(prompts)
            return self.judge.verdicts_iter(prompts, a, b)

    shared = tmp_path / "cache" / "check.jsonl"
    asked = []
    for name in ("first", "second"):
        judge = Counting(load_judge("length"))
        cfg = WinrateConfig(out=tmp_path / name, outputs=ours, reference_outputs=ref, judge="length",
                            judge_check=str(check), n_boot=50)
        res = run_winrate(cfg, judge=judge, check_cache=shared)
        asked.append(judge.asked)
        assert res.judge_check.n == 6 and res.judge_check.accuracy == 1.0
    assert asked == [4 + 6, 4]  # the length judge is order-free: one verdict per pair; the check only once
