"""The FLR scorer: equal to the straightforward computation, modes, follow-up files, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch

from finealign.errors import DataError, FinealignError
from finealign.rewards import load_scorer
from finealign.rewards.followups import DEFAULT_DIMS, default_followups_path, load_followups

PROMPTS = ["What is the capital of France?", [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "hi"}], "Write a poem about the sea."]
RESPONSES = ["Paris is the capital of France.", "Hello there!", "The sea is wide,\nthe sea is deep."]
TOL = 1e-4


def _flr(tiny, spec="", **kw):
    model, tok = tiny
    return load_scorer(f"flr:tiny-random,dims=relevance{spec}", model=model, tokenizer=tok, **kw)


def _straightforward(model, tok, prompt, response, followup, mode="loglik"):
    """Independent of the scorer: render the WHOLE conversation, tokenize it, one full forward pass."""
    from finealign.data.records import as_messages
    from finealign.rewards.roleswap import roleswap_messages

    if mode == "finetuned":
        msgs, role = roleswap_messages(prompt, response), "assistant"
    else:
        msgs, role = as_messages(prompt) + [{"role": "assistant", "content": response}], "user"
    ctx_text = tok.apply_chat_template(msgs, tokenize=False)
    full_text = tok.apply_chat_template(msgs + [{"role": role, "content": followup}], tokenize=False)
    start = full_text.index(followup, len(ctx_text))
    end = start + len(followup)
    enc = tok(full_text, add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor([enc["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    if mode == "reference":  # the FLR reference code: raw logits of tokenizer(f) ids at one position
        fb = tok(followup)["input_ids"]
        return float(logits[-len(fb), fb].mean())
    lp = torch.log_softmax(logits, -1)
    vals = [float(lp[t - 1, ids[0, t]]) for t, (s, e) in enumerate(enc["offset_mapping"]) if e > start and s < end]
    return sum(vals) / len(vals)


@pytest.mark.parametrize("mode", ["loglik", "reference", "finetuned"])
def test_tree_scorer_equals_one_full_pass_per_followup(tiny, mode):
    model, tok = tiny
    sc = _flr(tiny, f",mode={mode},batch_size=2")
    got = sc.followup_values(PROMPTS, RESPONSES)
    texts = sc.followups.texts
    for b in range(len(PROMPTS)):
        for f in (0, 7, 13, 19):  # a sample of positive and negative follow-ups
            want = _straightforward(model, tok, PROMPTS[b], RESPONSES[b], texts[f], mode)
            assert abs(float(got[b, f]) - want) < TOL, (mode, b, f)


@pytest.mark.parametrize("mode", ["loglik", "pmi", "reference", "finetuned"])
def test_tree_strategy_equals_naive_strategy_on_every_followup(tiny, mode):
    tree = _flr(tiny, f",mode={mode},batch_size=2").followup_values(PROMPTS, RESPONSES)
    naive = _flr(tiny, f",mode={mode},strategy=naive").followup_values(PROMPTS, RESPONSES)
    assert tree.shape == (3, 20)
    assert (tree - naive).abs().max() < TOL


def test_batching_does_not_change_scores(tiny):
    one = _flr(tiny, ",batch_size=1").score(PROMPTS, RESPONSES)
    three = _flr(tiny, ",batch_size=3").score(PROMPTS, RESPONSES)
    assert max(abs(a - b) for a, b in zip(one, three)) < 1e-5


def test_details_aggregate_as_documented(tiny):
    sc = load_scorer("flr:tiny-random,dims=relevance+correctness", model=tiny[0], tokenizer=tiny[1])
    res = sc.score_details(PROMPTS[:2], RESPONSES[:2], per_followup=True)
    items = sc.followups.items
    for r in res:
        assert set(r.dims) == {"relevance", "correctness"}
        assert len(r.followups) == 40
        for d in r.dims:  # s_d = mean(positive l) - mean(negative l)
            pos = [v for f, v in zip(items, r.followups) if f.dim == d and f.positive]
            neg = [v for f, v in zip(items, r.followups) if f.dim == d and not f.positive]
            assert abs(r.dims[d] - (sum(pos) / len(pos) - sum(neg) / len(neg))) < 1e-6
        assert abs(r.score - sum(r.dims.values()) / 2) < 1e-9
    assert sc.score(PROMPTS[:2], RESPONSES[:2]) == [r.score for r in res]


def test_pmi_subtracts_a_per_prompt_prior(tiny):
    # Two responses to the same prompt: the prior cancels in their difference; across prompts it does not.
    p = [PROMPTS[0], PROMPTS[0], PROMPTS[2]]
    r = [RESPONSES[0], "Lyon.", RESPONSES[2]]
    ll = _flr(tiny).followup_values(p, r)
    pmi = _flr(tiny, ",mode=pmi").followup_values(p, r)
    prior = ll - pmi
    assert torch.allclose(prior[0], prior[1], atol=1e-5)
    assert not torch.allclose(prior[0], prior[2], atol=1e-3)


def test_long_context_keeps_the_response_end_warns_and_counts(tiny):
    model, tok = tiny
    long_prompt = "Tell me about the sea. " * 60
    sc = _flr(tiny, ",max_length=160")
    with pytest.warns(UserWarning, match="oldest tokens"):
        vals = sc.followup_values([long_prompt, PROMPTS[0]], ["The tide is high.", RESPONSES[0]])
    assert sc.stats.truncated == 1 and sc.stats.truncated_tokens > 0
    ctx, plan = sc._plan_for(sc._context(long_prompt, "The tide is high."))
    fitted = ctx[-(160 - plan.max_segment):]  # what _fit keeps
    assert len(fitted) + plan.max_segment <= 160
    assert tok.decode(fitted).endswith("The tide is high.<|im_end|>\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = _flr(tiny, ",max_length=160,strategy=naive").followup_values([long_prompt], ["The tide is high."])
    assert (vals[:1] - naive).abs().max() < TOL


def test_empty_response_is_scored_as_it_is(tiny):
    """An empty response is a real answer (a model that said nothing): FLR scores it, and the
    follow-ups after it are the pmi prior's (the same empty assistant turn)."""
    sc = _flr(tiny, ",mode=loglik")
    got = sc.followup_values(PROMPTS[:1], [""])
    prior = _flr(tiny, ",mode=pmi")
    assert torch.isfinite(got).all()
    # pmi of the empty response = l(f | x, "") - l(f | x, "") = 0 for every follow-up
    assert prior.followup_values(PROMPTS[:1], [""]).abs().max() < 1e-5


def test_default_followup_set_is_the_papers():
    fs = load_followups()
    assert fs.dims == DEFAULT_DIMS
    assert len(fs) == 120
    for d in fs.dims:
        assert sum(1 for f in fs.items if f.dim == d and f.positive) == 10
    assert (default_followups_path().parent / "LICENSE").read_text().startswith("MIT License")


def test_followup_yaml_file_and_subset(tmp_path, tiny):
    p = tmp_path / "fu.yaml"
    p.write_text("clarity:\n  positive: [Clear, thanks!]\n  negative: [I am confused.]\n"
                 "tone:\n  positive: [Nice.]\n  negative: [Rude!, Not nice.]\n")
    fs = load_followups(p, "tone")
    assert fs.dims == ("tone",) and fs.texts == ["Nice.", "Rude!", "Not nice."]
    sc = load_scorer(f"flr:tiny-random,followups={p}", model=tiny[0], tokenizer=tiny[1])
    assert set(sc.score_details(PROMPTS[:1], RESPONSES[:1])[0].dims) == {"clarity", "tone"}


@pytest.mark.parametrize("content, where", [
    ('{"a": {"positive": ["x"], "negative": []}}', "a.negative"),
    ('{"a": {"positive": ["x", ""], "negative": ["y"]}}', "a.positive[1]"),
    ('{"a": {"positive": ["x"]}}', "a.negative"),
    ('{"a": {"positive": ["x"], "negative": ["y"], "neutral": ["z"]}}', "a.neutral"),
    ('{"a": ["x"]}', "a"),
    ('{"a": {"positive": ["x"], "negative": ["y"]', "malformed JSON"),
])
def test_malformed_followup_file_names_file_and_field(tmp_path, content, where):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DataError) as e:
        load_followups(p)
    assert str(p) in str(e.value) and where in str(e.value)


def test_unknown_dimension_and_bad_spec(tiny):
    with pytest.raises(DataError, match="unknown dimension"):
        load_followups(None, "relevance+wit")
    with pytest.raises(FinealignError, match="mode"):
        load_scorer("flr:tiny-random,mode=magic", model=tiny[0], tokenizer=tiny[1])
    with pytest.raises(FinealignError, match="unknown option"):
        load_scorer("flr:tiny-random,temperature=2", model=tiny[0], tokenizer=tiny[1])
    with pytest.raises(FinealignError, match="unknown scorer"):
        load_scorer("flrr:tiny-random")


@pytest.mark.slow
def test_default_model_tree_equals_one_pass_per_followup(smol):
    model, tok = smol
    sc = load_scorer("flr:smollm2-135m-instruct,dims=relevance", model=model, tokenizer=tok)
    p, r = ["What is the capital of France?", "Name a colour."], ["The capital of France is Paris.", "Blue."]
    got = sc.followup_values(p, r)
    texts = sc.followups.texts
    for b in range(2):
        for f in (0, 5, 10, 15):
            assert abs(float(got[b, f]) - _straightforward(model, tok, p[b], r[b], texts[f])) < TOL
    naive = load_scorer("flr:smollm2-135m-instruct,dims=relevance,strategy=naive", model=model, tokenizer=tok)
    assert (naive.followup_values(p[:1], r[:1]) - got[:1]).abs().max() < TOL
