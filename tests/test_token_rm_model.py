"""Token RM model: save/load round trip, trainable parts, encoding, the token-rm scorer."""

import pytest
import torch

from finealign.models.token_rm import encode_response, load_token_rm, new_token_rm


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def _rewards(model, tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(enc["input_ids"], enc["attention_mask"])


@pytest.mark.parametrize("mode,top", [("lora", 0), ("full", 1)])
def test_save_load_round_trip_gives_identical_rewards(tmp_path, mode, top):
    model, tok = new_token_rm("tiny-random", mode=mode, top_layers=top, seed=0)
    _perturb(model)  # LoRA B starts at 0: perturb so the adapters matter
    texts = ["The capital of France is Paris.", "Write a short poem about the sea."]
    before = _rewards(model, tok, texts)
    model.save(tmp_path / "rm", tok)
    assert (tmp_path / "rm" / "token_rm_head.safetensors").is_file()
    assert (tmp_path / "rm" / ("adapter" if mode == "lora" else "backbone")).is_dir()
    loaded, tok2 = load_token_rm(tmp_path / "rm")
    assert loaded.spec.base_model == "tiny-random" and loaded.spec.mode == mode
    after = _rewards(loaded, tok2, texts)
    assert before.shape == after.shape == (2, before.shape[1])
    assert torch.equal(before, after)


def test_top_layers_trains_only_the_top(tiny):
    model, _ = new_token_rm("tiny-random", mode="full", top_layers=1, seed=0)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("head.") for n in names)
    assert any(".layers.1." in n for n in names)
    assert not any(".layers.0." in n or "embed_tokens" in n for n in names)


def test_load_rejects_non_rm_dir(tmp_path):
    from finealign.errors import ModelError

    with pytest.raises(ModelError, match="not a token reward model"):
        load_token_rm(tmp_path)


def test_encode_response_offsets_and_truncation(tiny):
    _, tok = tiny
    resp = "Paris is the capital."
    e = encode_response(tok, "What is the capital of France?", resp)
    spans = [o for o, m in zip(e.offsets, e.response_mask) if m]
    assert "".join(resp[s:t] for s, t in spans) == resp  # response tokens tile the response
    assert e.truncated == 0
    long = encode_response(tok, "the quick brown fox " * 40, resp, max_length=40)
    assert len(long.input_ids) == 40 and long.truncated > 0
    assert sum(long.response_mask) == sum(e.response_mask)  # the response is never cut


def test_token_rm_scorer(tmp_path):
    from finealign.rewards.base import TokenScorer, load_scorer

    model, tok = new_token_rm("tiny-random", mode="full", top_layers=1, seed=0)
    _perturb(model)
    model.save(tmp_path / "rm", tok)
    s = load_scorer(f"token-rm:{tmp_path / 'rm'}")
    assert isinstance(s, TokenScorer)
    prompts, responses = ["Hi there", [{"role": "user", "content": "Say something"}]], ["Hello, friend.", "The sea is blue."]
    ts = s.score_tokens(prompts, responses)
    for t, r in zip(ts, responses):
        assert "".join(r[a:b] for a, b in t.offsets) == r  # offsets relative to the response text
        assert len(t.rewards) == len(t.token_ids) == len(t.offsets)
    assert s.score(prompts, responses) == pytest.approx([sum(t.rewards) for t in ts], abs=1e-5)
    mean = load_scorer(f"token-rm:{tmp_path / 'rm'},pool=mean")
    assert mean.score(prompts, responses) == pytest.approx([sum(t.rewards) / len(t.rewards) for t in ts], abs=1e-5)


@pytest.mark.slow
def test_round_trip_on_default_model(tmp_path):
    model, tok = new_token_rm("smollm2-135m-instruct", mode="lora", top_layers=2, seed=0)
    _perturb(model)
    before = _rewards(model, tok, ["The capital of France is Paris."])
    model.save(tmp_path / "rm", tok)
    loaded, tok2 = load_token_rm(tmp_path / "rm")
    assert torch.equal(before, _rewards(loaded, tok2, ["The capital of France is Paris."]))


def test_examples_include_the_stop_token_and_mark_it_on_end_insertions(tiny):
    from finealign.core.align import inserts_at_end
    from finealign.data.records import EditRecord
    from finealign.models.token_rm_data import build_pair_examples

    _, tok = tiny
    assert inserts_at_end("Dogs run.", "Dogs run and bark.") and not inserts_at_end("Dogs run.", "Big dogs run.")
    recs = [EditRecord(prompt="Say it", original="Dogs run.", edited="Dogs run and bark.", id="end"),
            EditRecord(prompt="Say it", original="Dogs run.", edited="Big dogs run.", id="front"),
            EditRecord(prompt="Say it", original="Dogs run.", edited="Cats sleep all day long here.", id="big",
                       meta={"minimality": "too_large"})]
    pairs, st = build_pair_examples(recs, tok, 128)
    assert st.kept == 3 and st.not_minimal == 0  # evaluation keeps flagged edits
    for p in pairs:
        for side, text in ((p.original, "Dogs run."), (p.edited, None)):
            k = max(j for j, m in enumerate(side.response_mask) if m)  # the last response token: the stop token
            assert tok.convert_ids_to_tokens(side.input_ids[k]) == tok.eos_token
            if text:
                assert side.offsets[k] == (len(text), len(text))
    end, front = pairs[0].original, pairs[1].original
    assert end.changed[max(j for j, m in enumerate(end.response_mask) if m)] == 1  # stopped too early
    assert sum(end.changed) == 1  # and nothing else of the original changed (a pure insertion)
    assert front.changed[max(j for j, m in enumerate(front.response_mask) if m)] == 0
    kept, st2 = build_pair_examples(recs, tok, 128, skip_non_minimal=True)
    assert st2.kept == 2 and st2.not_minimal == 1 and st2.not_minimal_names == ("big (too_large)",)
    assert "1 flagged by the minimality guard" in st2.summary()


def test_token_classifier_rewards_are_log_p_fine_and_say_so_after_a_reload(tmp_path):
    """A token_cls RM scores log sigmoid(head) (core.token_rm.token_rewards_from_head); its folder records
    the kind, and a folder saved before the kind was recorded takes it from train_config.json's loss."""
    import json

    import torch.nn.functional as F

    from finealign.rewards.base import load_scorer

    model, tok = new_token_rm("tiny-random", mode="full", top_layers=1, seed=0, reward="log_sigmoid")
    _perturb(model)
    model.save(tmp_path / "rm", tok)
    assert json.loads((tmp_path / "rm" / "token_rm_config.json").read_text())["reward"] == "log_sigmoid"
    s = load_scorer(f"token-rm:{tmp_path / 'rm'}")
    ts = s.score_tokens(["Hi there"], ["Hello, friend."])[0]
    enc = encode_response(tok, "Hi there", "Hello, friend.", None)
    with torch.no_grad():
        head = model(torch.tensor([enc.input_ids]))[0]
    pos = [j for j, m in enumerate(enc.response_mask) if m]
    assert ts.rewards == pytest.approx(F.logsigmoid(head[pos]).tolist(), abs=1e-5)
    assert max(ts.rewards) < 0  # log P(fine) of every token
    # an older folder: no "reward" in its config; its training settings say token_cls, or nothing
    cfg = json.loads((tmp_path / "rm" / "token_rm_config.json").read_text())
    del cfg["reward"]
    (tmp_path / "rm" / "token_rm_config.json").write_text(json.dumps(cfg))
    assert load_token_rm(tmp_path / "rm")[0].spec.reward == "logit"
    (tmp_path / "rm" / "train_config.json").write_text(json.dumps({"loss": "token_cls"}))
    assert load_token_rm(tmp_path / "rm")[0].spec.reward == "log_sigmoid"
    (tmp_path / "rm" / "train_config.json").write_text(json.dumps({"loss": "span_bt"}))
    assert load_token_rm(tmp_path / "rm")[0].spec.reward == "logit"
