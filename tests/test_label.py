"""Preference labeling: best-vs-worst DPO pairs with a margin, KTO labels by rank, TRL formats, CLI."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from finealign.data.io import read_records
from finealign.data.records import ResponseRecord
from finealign.errors import FinealignError
from finealign.train.labeling import LabelConfig, choose_pair, kto_labels, label_records


def test_choose_pair_hand_worked():
    # best = index 2 (0.9), worst = index 1 (-0.4); margin 1.3 > 0.5 -> kept
    c = choose_pair([0.1, -0.4, 0.9, 0.3], margin=0.5)
    assert (c.best, c.worst, c.reason) == (2, 1, "") and c.margin == pytest.approx(1.3)
    assert choose_pair([0.1, -0.4, 0.9], margin=1.3).reason == "below margin"  # 1.3 is not > 1.3
    assert choose_pair([2.0, 2.0, 2.0]).reason == "tie"
    assert choose_pair([1.0]).reason == "fewer than 2 responses"


def test_kto_labels_hand_worked():
    # K = 4, top half: ranks 5 > 3 > 1 > 0 -> indices 1, 3 desirable; 0, 2 undesirable
    labels, why = kto_labels([1.0, 5.0, 0.0, 3.0])
    assert why == "" and labels == [False, True, False, True]
    # K = 3: floor(1.5) = 1 each side, the middle one is left out
    assert kto_labels([2.0, 1.0, 3.0])[0] == [None, False, True]
    # scores tied across the boundary (2 and 2) are left out on both sides
    assert kto_labels([3.0, 2.0, 2.0, 1.0])[0] == [True, None, None, False]
    assert kto_labels([1.0, 1.0])[1] == "tie"
    assert kto_labels([1.0, 1.2], margin=0.5)[1] == "below margin"


def _responses(groups):
    return [ResponseRecord(prompt=f"question {p}", completion=text, prompt_id=str(p), sample=s)
            for p, texts in enumerate(groups) for s, text in enumerate(texts)]


def test_label_records_dpo_and_kto_counts():
    recs = _responses([["a", "aaa", "aa"], ["xx", "yy"], ["b", "bbbbb"], ["only", ""]])
    score = lambda rs: [float(len(r.completion)) for r in rs]  # noqa: E731 (length)
    rows, st = label_records(recs, score, LabelConfig(format="dpo", margin=1.0))
    # group 0: 3 - 1 = 2 > 1 kept; group 1: tie; group 2: 5 - 1 = 4 kept; group 3: "only" (4) vs the
    # empty response (0, scored as it is): 4 - 0 = 4 > 1 kept
    assert st.prompts == 4 and st.written == 3 and st.dropped == {"tie": 1} and st.empty == 1
    assert (rows[2]["chosen"], rows[2]["rejected"]) == ([{"role": "assistant", "content": "only"}],
                                                        [{"role": "assistant", "content": ""}])
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "aaa"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "a"}]
    assert rows[0]["prompt"] == [{"role": "user", "content": "question 0"}]
    assert rows[0]["meta"]["margin"] == 2.0
    krows, kst = label_records(recs, score, LabelConfig(format="kto", conversational=False))
    assert [(r["completion"], r["label"]) for r in krows if r["prompt"] == "question 0"] == [("a", False), ("aaa", True)]
    assert kst.dropped["middle or tied"] == 1 and kst.dropped["tie"] == 2


def test_config_errors():
    with pytest.raises(FinealignError):
        LabelConfig(format="ppo")
    with pytest.raises(FinealignError):
        LabelConfig(margin=-1)
    with pytest.raises(FinealignError):
        LabelConfig(top_frac=1.0)


def test_cli_end_to_end_tiny(tmp_path):
    src = tmp_path / "gen.jsonl"
    rows = [{"prompt": f"Tell me about {w}.", "prompt_id": str(i), "sample": s, "completion": f"{w} answer {s}" * (s + 1)}
            for i, w in enumerate(["the sea", "France", "a fox"]) for s in range(3)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = tmp_path / "pairs.jsonl"
    assert run_cli(["label", "--scorer", "flr:tiny-random", src, dst, "--format", "dpo", "-q"]) == 0
    pairs = read_records(dst, "pair")
    assert len(pairs) == 3 and all(p.chosen != p.rejected for p in pairs)
    cache = tmp_path / "pairs.jsonl.scores.jsonl"
    assert len(cache.read_text().splitlines()) == 9
    # rerun as KTO from the cached scores: the same per-prompt ranking decides the labels
    kto = tmp_path / "kto.jsonl"
    (tmp_path / "kto.jsonl.scores.jsonl").write_text(cache.read_text())
    manifest = tmp_path / "pairs.jsonl.scores.jsonl.manifest.json"  # the cache's record of its scorer
    (tmp_path / "kto.jsonl.scores.jsonl.manifest.json").write_text(manifest.read_text())
    assert run_cli(["label", "--scorer", "flr:tiny-random", src, kto, "--format", "kto", "-q"]) == 0
    labeled = [json.loads(x) for x in kto.read_text().splitlines()]
    best = {p.id: p.chosen for p in pairs}
    for r in labeled:
        if r["label"]:
            assert r["completion"][0]["content"] == best[r["id"].split(":")[0]]


def test_cli_bad_input(tmp_path):
    src = tmp_path / "pairs_in.jsonl"
    src.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    dst = tmp_path / "out.jsonl"
    assert run_cli(["label", "--scorer", "length", src, dst]) == 1  # not a generate output
    assert run_cli(["label", "--scorer", "nope", tmp_path / "missing.jsonl", dst]) == 1
    gen = tmp_path / "gen.jsonl"
    gen.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n" + '{"prompt": ""}\n')
    assert run_cli(["label", "--scorer", "length", gen, dst, "-q"]) == 1
    assert not dst.exists()
