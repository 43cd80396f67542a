"""Generation: sampling math, left padding, EOS handling, seeding, resumable files, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from finealign.errors import DataError, FinealignError
from finealign.generation import (
    GenerateStats,
    decode_rows,
    generate_batch,
    generate_completions,
    generate_file,
    inverse_cdf_sample,
    read_prompts,
    render_prompt,
    row_seed,
    top_p_filter,
)

PROMPTS = [
    "hi",
    "What is the capital of France? Please write a long and detailed answer with examples.",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarize the article."}],
    "Write a short poem about the sea.",
]


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ----------------------------------------------------------------------------- pure functions


def test_top_p_filter_hand_worked():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    # sorted: 0.5, 0.3, 0.15, 0.05; mass strictly before each: 0, 0.5, 0.8, 0.95
    # top_p 0.7 keeps 0.5 (0 < 0.7) and 0.3 (0.5 < 0.7), drops 0.15 (0.8) and 0.05 (0.95)
    # renormalised: 0.5 / 0.8 = 0.625, 0.3 / 0.8 = 0.375
    out = top_p_filter(probs, 0.7)
    assert torch.allclose(out, torch.tensor([[0.0, 0.625, 0.0, 0.375]]))
    assert torch.equal(top_p_filter(probs, 1.0), probs)
    # a tiny top_p still keeps the most likely token
    assert torch.allclose(top_p_filter(probs, 1e-6), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))


def test_inverse_cdf_sample_hand_worked():
    probs = torch.tensor([[0.0, 0.625, 0.0, 0.375]] * 4)
    # cdf: 0, 0.625, 0.625, 1.0 -> u in [0, 0.625) picks token 1, u in [0.625, 1) picks token 3;
    # the zero-probability tokens 0 and 2 are never picked, even at u = 0
    u = torch.tensor([0.0, 0.3, 0.625, 0.99])
    assert inverse_cdf_sample(probs, u).tolist() == [1, 1, 3, 3]


def test_inverse_cdf_sample_matches_distribution():
    g = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.1, 0.2, 0.7]]).expand(20000, 3)
    draws = inverse_cdf_sample(probs, torch.rand(20000, generator=g))
    freq = torch.bincount(draws, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.7]), atol=0.015)


def test_row_seed_is_stable_and_distinct():
    assert row_seed(0, "a", 0) == row_seed(0, "a", 0)
    assert len({row_seed(0, "a", 0), row_seed(0, "a", 1), row_seed(0, "b", 0), row_seed(1, "a", 0)}) == 4
    assert 0 <= row_seed(123, "x", 7) < 2**63


# ----------------------------------------------------------------------------- tiny model


def test_chat_template_applied(tiny):
    _, tok = tiny
    text = render_prompt(tok, "hello there")
    assert "<|im_start|>user\nhello there<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_left_padding_batched_equals_one_by_one_greedy(tiny):
    model, tok = tiny
    one = generate_batch(model, tok, PROMPTS, temperature=0, max_new_tokens=16, batch_size=1)
    many = generate_batch(model, tok, PROMPTS, temperature=0, max_new_tokens=16, batch_size=4)
    assert one == many
    assert len({r[0] for r in one}) > 1  # different prompts really give different continuations
    # and our loop agrees with transformers' own greedy generate on an unpadded single prompt
    ids = tok(render_prompt(tok, PROMPTS[1]), return_tensors="pt", add_special_tokens=False)
    ref = model.generate(**ids, max_new_tokens=16, do_sample=False)
    assert tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True) == one[1][0]


def test_sampling_is_seeded_per_row_not_per_batch(tiny):
    model, tok = tiny
    kw = dict(n=3, temperature=1.0, top_p=0.95, max_new_tokens=10, seed=7)
    a = generate_batch(model, tok, PROMPTS, batch_size=1, **kw)
    b = generate_batch(model, tok, PROMPTS, batch_size=12, **kw)
    assert a == b
    assert len(set(a[1])) > 1  # the 3 samples of one prompt differ
    c = generate_batch(model, tok, PROMPTS, batch_size=12, **{**kw, "seed": 8})
    assert c != a
    # seed=None follows torch's global generator
    torch.manual_seed(3)
    d = generate_batch(model, tok, PROMPTS[:2], n=2, temperature=1.0, max_new_tokens=6)
    torch.manual_seed(3)
    assert generate_batch(model, tok, PROMPTS[:2], n=2, temperature=1.0, max_new_tokens=6) == d


def test_temperature_zero_is_greedy_and_ignores_seed(tiny):
    model, tok = tiny
    a = generate_batch(model, tok, PROMPTS[:2], n=2, temperature=0, max_new_tokens=8, seed=1)
    b = generate_batch(model, tok, PROMPTS[:2], n=2, do_sample=False, temperature=0.7, max_new_tokens=8, seed=2)
    assert a == b and a[0][0] == a[0][1]
    with pytest.raises(FinealignError, match="temperature"):
        generate_batch(model, tok, PROMPTS[:1], temperature=0, do_sample=True)
    with pytest.raises(FinealignError, match="top_p"):
        generate_batch(model, tok, PROMPTS[:1], top_p=0)


class _ForceEos:
    """A forward hook on lm_head that makes EOS the argmax for chosen rows from step ``after`` on."""

    def __init__(self, eos: int, rows, after: int):
        self.eos, self.rows, self.after, self.calls = eos, rows, after, 0

    def __call__(self, module, inputs, output):
        self.calls += 1
        if self.calls > self.after:
            output = output.clone()
            output[list(self.rows), :, self.eos] = 1e4
        return output


def test_eos_stops_a_row_and_is_stripped(tiny_fresh):
    model, tok = tiny_fresh
    texts = [render_prompt(tok, p) for p in PROMPTS[:2]]
    free = decode_rows(model, tok, texts, [0, 0], do_sample=False, temperature=1, top_p=1, max_new_tokens=3)
    assert [c.finish_reason for c in free] == ["length", "length"] and [c.n_tokens for c in free] == [3, 3]
    # row 0 emits EOS at its 4th step: it keeps its 3 greedy tokens and stops; row 1 runs on to 8 tokens
    hook = model.lm_head.register_forward_hook(_ForceEos(tok.eos_token_id, [0], after=3))
    try:
        got = decode_rows(model, tok, texts, [0, 0], do_sample=False, temperature=1, top_p=1, max_new_tokens=8)
    finally:
        hook.remove()
    assert got[0].finish_reason == "stop" and got[0].n_tokens == 3 and got[0].text == free[0].text
    assert got[1].finish_reason == "length" and got[1].n_tokens == 8
    assert "<|im_end|>" not in got[0].text


def test_immediate_eos_gives_empty_completion_and_min_new_tokens(tiny_fresh):
    model, tok = tiny_fresh
    hook = model.lm_head.register_forward_hook(_ForceEos(tok.eos_token_id, [0], after=0))
    try:
        [[c]] = generate_completions(model, tok, ["hi"], temperature=0, max_new_tokens=5)
        [[m]] = generate_completions(model, tok, ["hi"], temperature=0, max_new_tokens=5, min_new_tokens=5)
    finally:
        hook.remove()
    assert c == ("", "stop", 0)
    assert m.finish_reason == "length" and m.n_tokens == 5  # EOS masked out for the first 5 steps


# ----------------------------------------------------------------------------- files


def _write_prompts(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"Question number {i}: what is {i} + {i}?"}) + "\n")
    return path


def test_generate_file_writes_k_per_prompt_and_resumes_identically(tiny, tmp_path):
    prompts = _write_prompts(tmp_path / "p.jsonl", 5)
    kw = dict(k=3, temperature=1.0, max_new_tokens=6, seed=1, batch_size=4)
    full = tmp_path / "full.jsonl"
    st = generate_file(tiny, prompts, full, **kw)
    rows = _lines(full)
    assert isinstance(st, GenerateStats) and st.prompts == 5 and st.responses_written == 15 and st.skipped == 0
    assert [r["id"] for r in rows] == [f"q{i}:{s}" for i in range(5) for s in range(3)]
    assert {r["meta"]["finish_reason"] for r in rows} <= {"stop", "length"}
    assert all(r["prompt"] == f"Question number {r['prompt_id'][1:]}: what is {r['prompt_id'][1:]} + {r['prompt_id'][1:]}?"
               for r in rows)
    assert st.new_tokens >= sum(r["meta"]["n_tokens"] for r in rows) > 0
    # a killed run: 7 complete lines and a torn 8th; the rerun completes it without duplicates
    part = tmp_path / "part.jsonl"
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:7]) + lines[7][:20])
    (tmp_path / "part.jsonl.manifest.json").write_text((tmp_path / "full.jsonl.manifest.json").read_text())
    st2 = generate_file(tiny, prompts, part, **kw)
    assert st2.skipped == 7 and st2.responses_written == 8
    assert part.read_text() == full.read_text()
    # a third run has nothing to do
    st3 = generate_file(tiny, prompts, part, **kw)
    assert (st3.responses_written, st3.skipped, st3.new_tokens) == (0, 15, 0)


def test_generate_file_counts_empty_completions(tiny_fresh, tmp_path):
    model, tok = tiny_fresh
    prompts = _write_prompts(tmp_path / "p.jsonl", 2)
    hook = model.lm_head.register_forward_hook(_ForceEos(tok.eos_token_id, [0, 1], after=0))
    try:
        st = generate_file((model, tok), prompts, tmp_path / "o.jsonl", k=1, max_new_tokens=4)
    finally:
        hook.remove()
    rows = _lines(tmp_path / "o.jsonl")
    assert st.empty == 2 and [r["completion"] for r in rows] == ["", ""]
    assert all(r["meta"]["finish_reason"] == "stop" and r["meta"]["n_tokens"] == 0 for r in rows)


def test_read_prompts_accepts_pairs_responses_and_line_ids(tmp_path):
    p = tmp_path / "mixed.jsonl"
    p.write_text(
        json.dumps({"prompt": "a", "chosen": "x", "rejected": "y"}) + "\n\n"
        + json.dumps({"prompt": [{"role": "user", "content": "b"}], "completion": "c", "prompt_id": "B", "id": "B:0"}) + "\n"
        + json.dumps({"prompt": [{"role": "user", "content": "b"}], "completion": "d", "prompt_id": "B", "id": "B:1"}) + "\n"
        + json.dumps({"prompt": "e", "id": 7}) + "\n")
    items = read_prompts(p)
    # line 1 has no id -> "1"; line 2 is blank; lines 3-4 share prompt_id B (read once); id 7 -> "7"
    assert [(i.id, i.prompt) for i in items] == [("1", "a"), ("B", [{"role": "user", "content": "b"}]), ("7", "e")]


@pytest.mark.parametrize("content, where", [
    (b'{"prompt": "ok"}\n{"prompt": "x"\n', ":2: malformed JSON"),
    (b'{"prompt": "ok"}\n{"text": "no prompt field"}\n', ":2: prompt: missing"),
    (b'{"prompt": "ok"}\n{"prompt": "   "}\n', ":2: prompt: empty"),
    (b'{"prompt": [{"role": "robot", "content": "x"}]}\n', ":1: prompt[0].role:"),
    (b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', ":2: not valid UTF-8"),
    (b'{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', ":2: id: duplicate id"),
    (b'{"prompt": "a", "id": 1.5}\n', ":1: id:"),
])
def test_bad_prompts_file_names_line_and_field_and_writes_nothing(tiny, tmp_path, content, where):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError) as e:
        generate_file(tiny, p, out, k=1, max_new_tokens=2)
    assert str(e.value).startswith(str(p)) and where in str(e.value)
    assert not out.exists()


@pytest.mark.slow
def test_default_model_greedy_capital_of_france(smol):
    model, tok = smol
    [[a], [b]] = generate_batch(model, tok, ["What is the capital of France? Answer briefly.",
                                             "Name three colors of the rainbow, separated by commas."],
                                temperature=0, max_new_tokens=24, batch_size=2)
    assert "Paris" in a
    assert "<|im_end|>" not in a and b != a


def test_prompt_longer_than_context_loses_its_oldest_context(tiny):
    """docs/long-inputs.md: the oldest context is cut to leave max_new_tokens of room (it used to only warn)."""
    from finealign.generation import generate_completions, render_prompt

    model, tok = tiny  # max_position_embeddings 1024
    cuts = []
    out = generate_completions(model, tok, ["hi", "word " * 1100], max_new_tokens=4, temperature=0,
                               on_cut=lambda i, n: cuts.append((i, n)))
    n_long = len(tok(render_prompt(tok, "word " * 1100), add_special_tokens=False)["input_ids"])
    assert [i for i, _ in cuts] == [1] and n_long - cuts[0][1] <= 1024 - 4 and len(out) == 2
    with pytest.raises(FinealignError, match="leaves"):  # no room left for any prompt
        generate_completions(model, tok, ["hi"], max_new_tokens=1020)
