"""Direct (response likelihood) and sequence-classifier scorers, and `finealign score` end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import run_cli
from finealign.errors import FinealignError
from finealign.rewards import load_scorer

PROMPTS = ["What is the capital of France?", [{"role": "user", "content": "hi"}]]
RESPONSES = ["Paris is the capital.", "Hello there, friend!"]


def test_direct_equals_mean_logprob_of_response_tokens(tiny):
    model, tok = tiny
    sc = load_scorer("direct:tiny-random,batch_size=2", model=model, tokenizer=tok)
    got = sc.score(PROMPTS, RESPONSES)
    for p, r, g in zip(PROMPTS, RESPONSES, got):
        msgs = ([{"role": "user", "content": p}] if isinstance(p, str) else p) + [{"role": "assistant", "content": r}]
        text = tok.apply_chat_template(msgs, tokenize=False)
        start = text.rindex(r)
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([enc["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        pos = [t for t, (s, e) in enumerate(enc["offset_mapping"]) if e > start and s < start + len(r)]
        pos.append(pos[-1] + 1)  # the stop token (end of turn) right after the response is part of it
        assert tok.convert_ids_to_tokens(int(ids[0, pos[-1]])) == tok.eos_token
        vals = [float(lp[t - 1, ids[0, t]]) for t in pos]
        assert abs(g - sum(vals) / len(vals)) < 1e-5
    one = load_scorer("direct:tiny-random,batch_size=1", model=model, tokenizer=tok).score(PROMPTS, RESPONSES)
    assert max(abs(a - b) for a, b in zip(one, got)) < 1e-5


def test_direct_token_scores_cover_the_response(tiny):
    sc = load_scorer("direct:tiny-random", model=tiny[0], tokenizer=tiny[1])
    ts = sc.score_tokens(PROMPTS[:1], RESPONSES[:1])[0]
    assert len(ts.token_ids) == len(ts.rewards) == len(ts.offsets) > 0
    assert "".join(RESPONSES[0][s:e] for s, e in ts.offsets) == RESPONSES[0]
    assert abs(sum(ts.rewards) / len(ts.rewards) - sc.score(PROMPTS[:1], RESPONSES[:1])[0]) < 1e-6
    (empty,) = sc.score(["x"], [""])  # an empty response is scored: log p(ending the turn at once)
    assert math.isfinite(empty) and empty < 0


@pytest.fixture(scope="module")
def seqcls_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from finealign.models.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, num_labels=2, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("rm")
    LlamaForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_seqcls_scorer_batches_and_labels(seqcls_dir):
    two = load_scorer(f"seqcls:{seqcls_dir},batch_size=2,device=cpu")
    p, r = PROMPTS + ["Write a poem."], RESPONSES + ["The sea is deep and wide and blue."]
    s2 = two.score(p, r)
    s1 = load_scorer(f"seqcls:{seqcls_dir},batch_size=1,device=cpu").score(p, r)
    assert max(abs(a - b) for a, b in zip(s1, s2)) < 1e-5  # right padding does not change the pooled token
    l0 = load_scorer(f"seqcls:{seqcls_dir},label=0,device=cpu").score(p, r)
    l1 = load_scorer(f"seqcls:{seqcls_dir},label=1,device=cpu").score(p, r)
    assert max(abs(a - (y - x)) for a, x, y in zip(s2, l0, l1)) < 1e-5  # two classes: logit 1 - logit 0
    with pytest.raises(FinealignError, match="label=5"):
        load_scorer(f"seqcls:{seqcls_dir},label=5,device=cpu")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_score_responses_resumes(tmp_path):
    inp = _write(tmp_path / "in.jsonl", [{"prompt": p, "completion": r, "id": str(i)}
                                         for i, (p, r) in enumerate(zip(PROMPTS * 2, RESPONSES + ["Ok.", "Sure."]))])
    out = tmp_path / "out.jsonl"
    spec = "flr:tiny-random,dims=relevance,device=cpu"
    assert run_cli(["score", "--scorer", spec, inp, out, "-q", "--chunk", "3"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert all(isinstance(r["score"], float) and set(r["flr_dims"]) == {"relevance"} for r in rows)
    # a killed run: drop the last record and leave a torn line; the rerun restores exactly the missing one
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:10])
    assert run_cli(["score", "--scorer", spec, inp, out, "-q"]) == 0
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in again] == ["0", "1", "2", "3"]
    assert abs(again[3]["score"] - rows[3]["score"]) < 1e-6


def test_cli_score_pairs_and_ratings(tmp_path):
    pairs = _write(tmp_path / "p.jsonl", [{"prompt": "hi", "chosen": "Hello!", "rejected": "Go away."}])
    assert run_cli(["score", "--scorer", "direct:tiny-random,device=cpu", pairs, tmp_path / "po.jsonl", "-q"]) == 0
    row = json.loads((tmp_path / "po.jsonl").read_text())
    assert {"score_chosen", "score_rejected"} <= set(row) and row["score_chosen"] != row["score_rejected"]
    ratings = _write(tmp_path / "r.jsonl", [{"prompt": "hi", "response": "Hello there", "score": 4}])
    assert run_cli(["score", "--scorer", "length", ratings, tmp_path / "ro.jsonl", "-q"]) == 0
    row = json.loads((tmp_path / "ro.jsonl").read_text())
    assert row["score"] == 4 and row["reward"] == len("Hello there")


def test_cli_score_bad_input_writes_nothing(tmp_path, capsys):
    inp = _write(tmp_path / "in.jsonl", [{"prompt": "a", "completion": "fine"}, {"prompt": " ", "completion": "x"}])
    out = tmp_path / "out.jsonl"
    assert run_cli(["score", "--scorer", "length", inp, out, "-q"]) == 1
    assert f"{inp}:2: prompt: empty" in capsys.readouterr().err  # an empty prompt stays an error
    assert not out.exists()
    good = _write(tmp_path / "g.jsonl", [{"prompt": "a", "completion": "fine"}])
    assert run_cli(["score", "--scorer", "nosuch:x", good, out, "-q"]) == 1
    assert "unknown scorer" in capsys.readouterr().err and not out.exists()
    bad_fu = tmp_path / "fu.json"
    bad_fu.write_text('{"x": {"positive": ["ok"], "negative": [3]}}')
    assert run_cli(["score", "--scorer", f"flr:tiny-random,followups={bad_fu}", good, out, "-q"]) == 1
    assert f"{bad_fu}: x.negative[0]" in capsys.readouterr().err and not out.exists()
