"""The vLLM backend without vLLM: request building, parsing of recorded outputs (tests/fixtures/vllm,
vLLM's documented RequestOutput structure), scorers equal to the transformers ones through a stand-in
engine, and the one-line errors when vLLM is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli
from finealign.errors import FinealignError
from finealign.models import vllm as fv
from finealign.models.vllm import logprob_request, parse_completion, parse_prompt_logprobs, sample_request

FIX = Path(__file__).resolve().parent / "fixtures" / "vllm"


def _fixture(name: str):
    return json.loads((FIX / name).read_text())


def test_parse_prompt_logprobs_reads_each_positions_own_token(tiny):
    model, _ = tiny
    out = _fixture("prompt_logprobs_output.json")
    ids = out["prompt_token_ids"]
    got = parse_prompt_logprobs(out, range(1, len(ids)))
    with torch.no_grad():  # log p(t_j | t_<j) is read from the logits at position j - 1
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    want = [float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
    assert got == pytest.approx(want, abs=1e-5)
    # entries also hold the most likely token; where that is another token, its value is never read
    j = next(j for j in range(1, len(ids)) if len(out["prompt_logprobs"][j]) > 1)
    other = next(v for k, v in out["prompt_logprobs"][j].items() if int(k) != ids[j])
    assert other["rank"] == 1 and got[j - 1] != other["logprob"]
    with pytest.raises(FinealignError, match="no entry for position 0"):
        parse_prompt_logprobs(out, [0])  # entry 0 is None: the first token has no prediction
    with pytest.raises(FinealignError, match="no prompt_logprobs"):
        parse_prompt_logprobs({**out, "prompt_logprobs": None}, [1])
    bad = {**out, "prompt_logprobs": [None, {"999": {"logprob": -1.0}}] + out["prompt_logprobs"][2:]}
    with pytest.raises(FinealignError, match=f"lacks the prompt's token {ids[1]}"):
        parse_prompt_logprobs(bad, [1])


def test_parse_completion_finish_reasons_and_token_counts():
    eos, length, stop_id = _fixture("generate_outputs.json")
    # 12 text tokens + EOS -> 12 tokens, "stop"; 24 tokens at max_tokens -> "length"; 2 + stop token -> 2
    assert parse_completion(eos, [2]) == (" hello there friend", "stop", 12)
    assert parse_completion(length, [2]) == (" hello there friend hello there friend", "length", 24)
    assert parse_completion(stop_id, [2])[1:] == ("stop", 2)
    as_objects = SimpleNamespace(request_id="1", outputs=[SimpleNamespace(**eos["outputs"][0])])
    assert parse_completion(as_objects, [2]) == parse_completion(eos, [2])  # vLLM's objects, not dicts
    with pytest.raises(FinealignError, match="no completion"):
        parse_completion({**eos, "outputs": []})
    with pytest.raises(FinealignError, match="not finished"):
        parse_completion({**eos, "outputs": [{**eos["outputs"][0], "finish_reason": None}]})


def test_requests_carry_per_row_seeds_and_sampling_settings(tiny):
    from finealign.core.sampling import row_seed
    from finealign.data.prompts import PromptItem
    from finealign.generation import render_prompt
    from finealign.generation_vllm import generation_requests

    r = sample_request([5, 6, 7], seed=11, temperature=0.7, top_p=0.9, max_new_tokens=16, stop_token_ids=[2, 9])
    assert r.prompt() == {"prompt_token_ids": [5, 6, 7]}
    assert r.params == {"n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "min_tokens": 0,
                        "stop_token_ids": [2, 9], "skip_special_tokens": True, "seed": 11}
    greedy = sample_request([5], seed=11, temperature=0.0, top_p=0.9, max_new_tokens=4, stop_token_ids=[2])
    assert "seed" not in greedy.params and greedy.params["top_p"] == 1.0
    assert logprob_request([1, 2, 3]).params == {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0,
                                                 "detokenize": False}
    _, tok = tiny
    items = [PromptItem("a", "Hi"), PromptItem("b", [{"role": "user", "content": "Yo"}])]
    ids = tok([render_prompt(tok, p.prompt) for p in items], add_special_tokens=False)["input_ids"]
    rows = [(0, 0), (0, 1), (1, 0)]
    reqs = generation_requests(items, ids, rows, seed=3, temperature=0.7, top_p=0.9, max_new_tokens=8,
                               stop_token_ids=[2])
    assert [r.params["seed"] for r in reqs] == [row_seed(3, "a", 0), row_seed(3, "a", 1), row_seed(3, "b", 0)]
    assert reqs[2].prompt_token_ids == tuple(ids[1])  # the transformers backend's rendered prompt
    alone = generation_requests(items, ids, rows[2:], seed=3, temperature=0.7, top_p=0.9, max_new_tokens=8,
                                stop_token_ids=[2])
    assert alone[0] == reqs[2]  # a row's request does not depend on the other rows


class RecordingLLM:
    """Stands in for ``vllm.LLM``: answers ``generate`` with vLLM's structures; prompt log-probabilities
    are computed with a transformers model, sampled completions are canned (a few tokens, then EOS)."""

    def __init__(self, model, tok):
        self.model, self.tok, self.calls = model, tok, []

    @torch.no_grad()
    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append(len(prompts))
        outs = []
        for p, sp in zip(prompts, params):
            ids = p["prompt_token_ids"]
            plp = None
            if sp.get("prompt_logprobs") is not None:
                logp = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
                plp = [None] + [{ids[j]: SimpleNamespace(logprob=float(logp[j - 1, ids[j]]), rank=None,
                                                         decoded_token=None)} for j in range(1, len(ids))]
            gen = [40 + sp.get("seed", 0) % 50, 41, self.tok.eos_token_id]
            outs.append(SimpleNamespace(request_id=str(len(outs)), prompt_token_ids=ids, prompt_logprobs=plp,
                                        outputs=[SimpleNamespace(index=0, text=self.tok.decode(gen[:2]), token_ids=gen,
                                                                 finish_reason="stop", stop_reason=None)]))
        return outs


@pytest.fixture()
def no_sampling_params(monkeypatch):
    """vLLM's SamplingParams replaced by its keyword arguments (vLLM is not installed here)."""
    monkeypatch.setattr(fv, "sampling_params", lambda r: dict(r.params))


@pytest.mark.parametrize("mode", ["loglik", "pmi", "finetuned"])
def test_vllm_flr_equals_transformers_flr(tiny, no_sampling_params, mode):
    from finealign.rewards.flr import FLRConfig, FLRScorer
    from finealign.rewards.followups import load_followups
    from finealign.rewards.vllm_scorers import VllmFLRScorer

    model, tok = tiny
    fs = load_followups(None).subset(load_followups(None).dims[:2])  # two dimensions: a quicker test
    prompts = ["What is 2 + 2?", [{"role": "user", "content": "Name a colour."}], "What is 2 + 2?"]
    responses = ["4.", "Blue, mostly.", "It is five."]
    cfg = FLRConfig(model="tiny-random", mode=mode, device="cpu", batch_size=2)
    want = FLRScorer(cfg, model=model, tokenizer=tok, followups=fs).score_details(prompts, responses)
    llm = RecordingLLM(model, tok)
    got = VllmFLRScorer(cfg, llm=llm, tokenizer=tok, followups=fs).score_details(prompts, responses)
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=1e-5)
        assert g.dims == pytest.approx(w.dims, abs=1e-5)
    # one request per (context, follow-up); pmi adds one context per distinct prompt (2 here)
    contexts = 3 + (2 if mode == "pmi" else 0)
    assert sum(llm.calls) == contexts * len(fs)


def test_vllm_direct_equals_transformers_direct_and_reference_mode_is_refused(tiny, no_sampling_params):
    from finealign.rewards.direct import DirectConfig, DirectScorer
    from finealign.rewards.flr import FLRConfig
    from finealign.rewards.vllm_scorers import VllmDirectScorer, VllmFLRScorer

    model, tok = tiny
    prompts, responses = ["Hello?", "Tell me a fact."], ["Hi! How can I help?", "Water boils at 100 C at sea level."]
    cfg = DirectConfig(model="tiny-random", device="cpu")
    want = DirectScorer(cfg, model=model, tokenizer=tok).score(prompts, responses)
    got = VllmDirectScorer(cfg, llm=RecordingLLM(model, tok), tokenizer=tok).score(prompts, responses)
    assert got == pytest.approx(want, abs=1e-5)
    with pytest.raises(FinealignError, match="reference reads raw logits"):
        VllmFLRScorer(FLRConfig(model="tiny-random", mode="reference"), llm=object(), tokenizer=tok)


def test_vllm_generate_file_writes_generate_records_and_resumes(tmp_path, tiny, no_sampling_params):
    from finealign.generation_vllm import vllm_generate_file

    model, tok = tiny
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "One?"}\n{"id": "x", "prompt": "Two?"}\n')
    llm = RecordingLLM(model, tok)
    st = vllm_generate_file("tiny-random", prompts, tmp_path / "out.jsonl", k=2, llm=llm, tokenizer=tok)
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1:0", "1:1", "x:0", "x:1"] and st.responses_written == 4
    assert all(r["meta"] == {"model": "tiny-random", "finish_reason": "stop", "n_tokens": 2, "backend": "vllm"}
               for r in rows)  # 2 tokens + EOS: EOS not counted
    assert rows[0]["completion"] != rows[1]["completion"]  # per-row seeds reach the engine
    again = vllm_generate_file("tiny-random", prompts, tmp_path / "out.jsonl", k=2, llm=llm, tokenizer=tok)
    assert again.responses_written == 0 and again.skipped == 4 and llm.calls == [4]


def test_cli_without_vllm_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "One?", "completion": "Yes."}\n')
    assert run_cli(["generate", "--model", "tiny-random", "--prompts", prompts, "--out", tmp_path / "o.jsonl",
                    "--backend", "vllm", "--quiet"]) == 1
    assert "pip install vllm" in capsys.readouterr().err
    assert run_cli(["score", prompts, tmp_path / "s.jsonl", "--scorer", "direct:tiny-random,backend=vllm",
                    "--quiet"]) == 1
    assert "pip install vllm" in capsys.readouterr().err
    assert run_cli(["score", prompts, tmp_path / "s.jsonl", "--scorer", "flr:tiny-random,backend=onnx",
                    "--quiet"]) == 1
    assert "option backend='onnx': 'onnx' is not one of transformers, vllm" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "s.jsonl").exists()
