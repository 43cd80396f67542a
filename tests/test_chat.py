"""Chat rendering in one place (``data.chat``): pinned token ids, every consumer renders the same
ids, already-rendered prompts are used as they are, and every message shape TRL 1.16 passes.

Expected ids are the tokenizer's own encoding of a hand-written ChatML string, never the output of
the code under test. The tiny model has a ChatML template (default system turn "You are a helpful
assistant."); the real default model's (slow tests) has SmolLM's system turn.
"""

from __future__ import annotations

import json

import pytest
import torch

from finealign.data import chat
from finealign.data.records import FieldError, PairRecord, check_prompt
from finealign.errors import FinealignError

TINY_SYS = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
SMOL_SYS = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
Q = "What is the capital of France?"
A = "Paris is the capital."
SYSTEM_MSGS = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": Q}]
MULTI = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello. How can I help?"},
         {"role": "user", "content": Q}]


def _cases(sys_turn: str):
    """(prompt, hand-written ChatML text of the prompt with the assistant turn opened)."""
    return [
        (Q, f"{sys_turn}<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n"),
        ([{"role": "user", "content": Q}], f"{sys_turn}<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n"),
        (SYSTEM_MSGS, f"<|im_start|>system\nAnswer in one word.<|im_end|>\n<|im_start|>user\n{Q}<|im_end|>\n"
                      "<|im_start|>assistant\n"),
        (MULTI, f"{sys_turn}<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello. How can I help?<|im_end|>\n"
                f"<|im_start|>user\n{Q}<|im_end|>\n<|im_start|>assistant\n"),
    ]


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def _check_pinned(tok, sys_turn):
    start, end = tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")
    for prompt, hand in _cases(sys_turn):
        expected = _ids(tok, hand)
        assert _ids(tok, chat.render_prompt(tok, prompt)) == expected
        assert expected[-3:-1] != [end, end] and expected.count(start) == hand.count("<|im_start|>")
        # the closed pair: the prompt, the response verbatim, then the end of the turn
        enc = chat.encode_pair(tok, prompt, A)
        assert enc.input_ids == _ids(tok, hand + A + "<|im_end|>\n")
        assert tok.decode([t for t, m in zip(enc.input_ids, enc.response_mask) if m]) == A
        assert enc.input_ids[len(expected) - 1] == expected[-1]  # the prompt's ids are a prefix
        # and for ChatML this equals the template's own rendering of the whole conversation
        full = tok.apply_chat_template(chat.as_messages(prompt) + [{"role": "assistant", "content": A}], tokenize=False)
        assert chat.render_pair(tok, prompt, A).text == full


def test_pinned_ids_on_the_tiny_chatml_template(tiny):
    _check_pinned(tiny[1], TINY_SYS)


@pytest.mark.slow
def test_pinned_ids_on_the_default_model(smol):
    _check_pinned(smol[1], SMOL_SYS)


def test_every_consumer_renders_the_same_ids(tiny):
    """generation, the direct / FLR / seqcls scorers, the token RM, PPO's prompt encoder, the TRL
    export, DPO data and data stats all read one rendering."""
    from finealign.data.stats import _prompt_strings
    from finealign.data.trl_export import to_trl
    from finealign.generation import render_prompt
    from finealign.models.token_rm import encode_response
    from finealign.rewards.direct import DirectScorer
    from finealign.rewards.flr import FLRScorer
    from finealign.rewards.seqcls import SeqClsScorer
    from finealign.train.ppo_rollout import encode_prompts
    from finealign.train.preference import pref_rows

    model, tok = tiny
    direct = DirectScorer(model=model, tokenizer=tok)
    flr = FLRScorer(model=model, tokenizer=tok)
    seqcls = SeqClsScorer.__new__(SeqClsScorer)
    seqcls.tokenizer = tok
    for prompt, hand in _cases(TINY_SYS):
        pair = _ids(tok, hand + A + "<|im_end|>\n")
        assert _ids(tok, render_prompt(tok, prompt)) == _ids(tok, hand)
        # the causal scorers stop at the response's last token (nothing after it changes their values)
        # the direct scorer and the token RM read the response and its stop token (the end of turn)
        with_stop = pair[:len(_ids(tok, hand + A)) + 1]
        assert direct._encode(prompt, A, 0).ids == with_stop and with_stop[-1] == tok.eos_token_id
        assert encode_response(tok, prompt, A).input_ids == with_stop
        assert _ids(tok, seqcls._text(prompt, A)) == pair
        assert _ids(tok, chat.render_messages(tok, flr._context(prompt, A))) == pair
        ids, mask, _ = encode_prompts(tok, [hand], 10_000)
        assert ids[0][mask[0].bool()].tolist() == _ids(tok, hand)
        assert to_trl([PairRecord(prompt, A, "No.")], "dpo", "standard", tokenizer=tok).rows[0]["prompt"] == hand
        assert _prompt_strings([prompt], tok) == [hand]
    rows, ties = pref_rows([PairRecord(Q, A, "No.")], "dpo", tok)
    assert rows[0]["prompt"] == [{"role": "user", "content": Q}] and ties == 0  # conversational: TRL renders it


def test_padding_helpers():
    ids, att, (m,) = chat.pad_right([[5, 6, 7], [8]], 0, [[1, 0, 1], [1]])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and att.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert m.tolist() == [[True, False, True], [True, False, False]]
    ids, att, _ = chat.pad_left([[5, 6, 7], [8]], 0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and att.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_tokenizer_without_a_template(tiny):
    import copy

    tok = copy.deepcopy(tiny[1])
    tok.chat_template = None
    assert chat.render_prompt(tok, Q) == Q + "\n\n"
    assert chat.render_prompt(tok, MULTI) == f"user: Hi!\n\nassistant: Hello. How can I help?\n\nuser: {Q}\n\n"
    assert chat.render_pair(tok, Q, A).text == f"{Q}\n\n{A}"  # no end marker without a template


# ------------------------------------------------------------------ already-rendered prompts (issue 12, fault 2)

def test_a_rendered_prompt_is_used_as_it_is_everywhere(tiny):
    from finealign.rewards.direct import DirectScorer
    from finealign.rewards.flr import FLRScorer
    from finealign.train.preference import pref_rows

    model, tok = tiny
    rendered = chat.render_prompt(tok, SYSTEM_MSGS)
    assert rendered.count("<|im_start|>") == 3 and chat.is_rendered(rendered, tok)
    assert not chat.is_rendered(Q, tok)
    assert chat.render_prompt(tok, rendered) == rendered  # not wrapped in a second template
    # a closed last turn gets the assistant turn opened after it
    closed = rendered[: -len("<|im_start|>assistant\n")]
    assert chat.render_prompt(tok, closed.rstrip("\n")) == rendered
    direct = DirectScorer(model=model, tokenizer=tok)
    assert direct.score([rendered], [A]) == direct.score([SYSTEM_MSGS], [A])
    for mode in ("loglik", "pmi"):
        from finealign.rewards.flr import FLRConfig

        flr = FLRScorer(FLRConfig(mode=mode), model=model, tokenizer=tok)
        assert torch.allclose(flr.followup_values([rendered], [A]), flr.followup_values([SYSTEM_MSGS], [A]), atol=1e-5)
    rows, _ = pref_rows([PairRecord(rendered, A, "No."), PairRecord(Q, "Yes.", "No.")], "dpo", tok)
    assert rows[0]["prompt"] == rendered and rows[1]["prompt"] == chat.render_prompt(tok, Q)  # one format
    assert rows[0]["chosen"] == A


def test_a_rendered_prompt_where_it_must_be_restructured_is_a_clear_error(tiny):
    from finealign.rewards.flr import FLRConfig, FLRScorer
    from finealign.train.followup_sft import sft_rows

    model, tok = tiny
    rendered = chat.render_prompt(tok, Q)
    with pytest.raises(FinealignError, match="already carries the chat template"):
        FLRScorer(FLRConfig(mode="finetuned"), model=model, tokenizer=tok).score([rendered], [A])
    with pytest.raises(FinealignError, match="already carries the chat template"):
        sft_rows([{"prompt": rendered, "response": A, "feedback": "Thanks."}], tok)
    with pytest.raises(FinealignError, match="already carries a chat template"):
        chat.trl_prompt(rendered, conversational=True, tokenizer=tok)


def test_generation_and_token_rm_see_one_template(tiny):
    from finealign.generation import generate_batch
    from finealign.models.token_rm import encode_response

    model, tok = tiny
    rendered = chat.render_prompt(tok, Q)
    assert generate_batch(model, tok, [rendered], temperature=0, max_new_tokens=5) == \
        generate_batch(model, tok, [Q], temperature=0, max_new_tokens=5)
    assert encode_response(tok, rendered, A).input_ids == encode_response(tok, Q, A).input_ids


@pytest.mark.slow
def test_rendered_prompt_scores_like_its_messages_on_the_default_model(smol):
    """The issue's case: a rendered system + user conversation scored by the direct scorer equals the
    score of the same conversation as messages (it moved from -0.200 to -0.259 when wrapped twice)."""
    from finealign.rewards.direct import DirectScorer

    model, tok = smol
    sc = DirectScorer(model=model, tokenizer=tok)
    rendered = chat.render_prompt(tok, SYSTEM_MSGS)
    assert rendered.count("<|im_start|>") == 3
    assert sc.score([rendered], ["Paris."]) == sc.score([SYSTEM_MSGS], ["Paris."])


# ------------------------------------------------------------------ message shapes (issue 12, fault 3)

TOOL_CALL = {"type": "function", "function": {"name": "capital", "arguments": {"country": "France"}}}
SHAPES = {
    "string": [{"role": "user", "content": Q}],
    "text blocks": [{"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                                 {"type": "text", "text": "of France?"}]}],
    "tool call turn": [{"role": "user", "content": Q}, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
                       {"role": "tool", "name": "capital", "content": "Paris"}],
    "tool call with empty text": [{"role": "user", "content": Q},
                                  {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
                                  {"role": "tool", "name": "capital", "content": [{"type": "text", "text": "Paris"}]}],
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_message_shape_is_read(shape, tmp_path, tiny):
    from finealign.data.io import read_records

    msgs = check_prompt(SHAPES[shape])
    assert all(isinstance(m["content"], str) for m in msgs)
    assert msgs[0]["content"] == Q  # text blocks joined
    text = chat.render_prompt(tiny[1], msgs)
    assert "None" not in text and "'type'" not in text
    if "tool" in shape:
        assert '<tool_call>\n{"name": "capital", "arguments": {"country": "France"}}\n</tool_call>' in text
        assert "<|im_start|>tool\nParis<|im_end|>" in text
    # the data readers accept the shape as well (a pair file in JSONL)
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": SHAPES[shape], "chosen": "Paris.", "rejected": "Lyon."}) + "\n")
    (rec,) = read_records(p)
    assert rec.prompt == msgs


def test_completion_shapes_read_as_the_models_words():
    blocks = [{"role": "assistant", "content": [{"type": "text", "text": "Paris."}]}]
    assert chat.completion_text(blocks) == "Paris."  # not its 36-character repr
    assert chat.completion_text([{"type": "text", "text": "Paris."}]) == "Paris."
    calls = [{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}]
    assert chat.completion_text(calls) == '<tool_call>\n{"name": "capital", "arguments": {"country": "France"}}\n</tool_call>'
    turns = calls + [{"role": "tool", "name": "capital", "content": "Paris"},
                     {"role": "assistant", "content": "It is Paris."}]
    assert chat.completion_text(turns).endswith("</tool_call>\nIt is Paris.")  # the tool's answer is not scored
    assert chat.completion_text([{"role": "assistant", "content": None}]) == ""  # said nothing: empty, not "None"


@pytest.mark.parametrize("bad,field", [
    ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}], "prompt[0].content[0]"),
    ([{"role": "user", "content": None}], "prompt[0].content"),
    ([{"role": "user", "content": "x", "tool_calls": [TOOL_CALL]}], "prompt[0].tool_calls"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {}}]}],
     "prompt[0].tool_calls[0].function.name"),
    ([{"role": "robot", "content": "x"}], "prompt[0].role"),
])
def test_bad_message_shapes_name_the_field(bad, field):
    with pytest.raises(FieldError) as e:
        check_prompt(bad)
    assert e.value.field == field


def test_trl_reward_adapter_reads_every_shape():
    from finealign.rewards.base import LengthScorer, Scorer
    from finealign.rewards.trl_adapter import as_reward_func

    class Capture(Scorer):
        name = "capture"

        def score(self, prompts, responses):
            self.seen = (list(prompts), list(responses))
            return [float(len(r)) for r in responses]

    f = as_reward_func(LengthScorer())
    blocks = [[{"role": "assistant", "content": [{"type": "text", "text": "Paris."}]}]]
    assert f(prompts=[SHAPES["text blocks"]], completions=blocks) == [6.0]  # 6 characters, not 36
    calls = [[{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}]]
    assert f(prompts=[SHAPES["string"]], completions=calls)[0] == len(chat.tool_calls_text([TOOL_CALL]))
    cap = Capture()
    g = as_reward_func(cap)
    g(prompts=[SHAPES["text blocks"], SHAPES["tool call turn"]], completions=blocks + calls)
    assert cap.seen[0][0] == [{"role": "user", "content": Q}]
    assert cap.seen[0][1][1] == {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]}
    assert "None" not in cap.seen[1][1]


def test_tool_conversations_score_with_the_direct_scorer(tiny):
    from finealign.rewards.direct import DirectScorer

    sc = DirectScorer(model=tiny[0], tokenizer=tiny[1])
    a, b = sc.score([SHAPES["tool call turn"], SHAPES["tool call with empty text"]], ["It is Paris."] * 2)
    assert a == pytest.approx(b, abs=1e-6)  # None and "" content render the same turn
