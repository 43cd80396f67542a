"""The dpo-implicit token scorer against hand-computed log-probability differences on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from finealign.data.chat import encode_pair
from finealign.errors import FinealignError
from finealign.rewards import load_scorer
from finealign.rewards.dpo_implicit import DPOImplicitScorer, default_reference

PROMPTS = ["What is the capital of Peru? Answer in one sentence.", "Name a colour."]
RESPONSES = ["The capital of Peru is Lima.", "Blue"]


def _by_hand(model, tok, prompt, response):
    """log p(y_t | x, y_<t) of the response's own tokens and its stop token (the end of turn right after
    it), from one plain forward pass."""
    enc = encode_pair(tok, prompt, response)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # (T, V)
    pos = [t for t, m in enumerate(enc.response_mask) if m and t > 0]
    pos.append(pos[-1] + 1)
    assert enc.input_ids[pos[-1]] == tok.eos_token_id
    return [float(logp[t - 1, enc.input_ids[t]]) for t in pos]


def _perturbed_lora():
    from finealign.models import LoraOptions, load_model

    model, tok = load_model("tiny-random", device="cpu", lora=LoraOptions(r=4, alpha=8))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.eval()
    return model, tok


def test_adapter_off_reference_matches_hand_computation():
    model, tok = _perturbed_lora()
    beta = 0.5
    s = DPOImplicitScorer("lora-policy", model=model, tokenizer=tok, beta=beta, device="cpu")
    got = s.score_tokens(PROMPTS, RESPONSES)
    for ts, p, r in zip(got, PROMPTS, RESPONSES):
        pol = _by_hand(model, tok, p, r)
        with model.disable_adapter():
            ref = _by_hand(model, tok, p, r)
        want = [beta * (a - b) for a, b in zip(pol, ref)]  # r_t = beta (log pi - log pi_ref)
        assert len(ts.rewards) == len(want) > 0
        assert ts.rewards == pytest.approx(want, abs=1e-4)
        assert any(abs(x) > 1e-3 for x in ts.rewards)  # the adapter really changes the policy
        assert r[ts.offsets[0][0]:ts.offsets[-1][1]].strip()  # offsets index the response text
    assert s.score(PROMPTS, RESPONSES) == pytest.approx([sum(t.rewards) for t in got], abs=1e-5)


def test_separate_reference_model_and_identity():
    from finealign.models import load_model

    pol, tok = load_model("tiny-random", device="cpu")
    ref, _ = load_model("tiny-random", device="cpu")
    same = DPOImplicitScorer("tiny-random", model=pol, tokenizer=tok, ref_model=ref, beta=0.1)
    assert all(abs(x) < 1e-6 for t in same.score_tokens(PROMPTS, RESPONSES) for x in t.rewards)  # pi = pi_ref: 0
    with torch.no_grad():
        pol.get_output_embeddings().weight.mul_(1.5)
    s = DPOImplicitScorer("tiny-random", model=pol, tokenizer=tok, ref_model=ref, beta=0.1)
    ts = s.score_tokens(PROMPTS[:1], RESPONSES[:1])[0]
    want = [0.1 * (a - b) for a, b in zip(_by_hand(pol, tok, PROMPTS[0], RESPONSES[0]),
                                          _by_hand(ref, tok, PROMPTS[0], RESPONSES[0]))]
    assert ts.rewards == pytest.approx(want, abs=1e-4)


def test_spec_options_and_errors(tmp_path):
    (tmp_path / "finealign_train.json").write_text(json.dumps({"config": {"model": "tiny-random"}}))
    assert default_reference(str(tmp_path)) == "tiny-random"
    assert default_reference(str(tmp_path / "none")) is None
    with pytest.raises(FinealignError, match="needs the DPO policy"):
        load_scorer("dpo-implicit")
    with pytest.raises(FinealignError, match="unknown option"):
        load_scorer("dpo-implicit:tiny-random,alpha=1")
    with pytest.raises(FinealignError, match=r"^scorer dpo-implicit: option beta='0': must be positive"):
        load_scorer("dpo-implicit:tiny-random,beta=0")
    with pytest.raises(FinealignError, match="give the reference"):
        load_scorer("dpo-implicit:tiny-random,device=cpu")
    s = load_scorer("dpo-implicit:tiny-random,ref=tiny-random,device=cpu")  # through the spec parser
    assert s.score(PROMPTS[:1], RESPONSES[:1])[0] == pytest.approx(0.0, abs=1e-5)
