"""The token-reward contract on an engine's tokens (integrations.token_rewards) and TRL's reductions.

Engine-independent: real BPE tokenizers (the tiny model's, trained here; one with other merges for the
cross-tokenizer case), hand-made token scorers whose spans and rewards are chosen so every placement can be
worked out by hand. The same functions run inside verl in tests/test_verl_integration.py.
"""

from __future__ import annotations

import pytest
import torch

from finealign.errors import FinealignError
from finealign.integrations.token_rewards import (KEEPS_POSITIONS, SUMS_POSITIONS, engine_rewards,
                                                  estimator_warning, to_tensor)
from finealign.rewards.base import Scorer, TokenScorer, TokenScores
from finealign.rewards.trl_adapter import as_reward_func, reduce_token_rewards

TEXT = "The capital is Paris."  # tiny tokenizer: The|␣capital|␣is|␣Paris|. = (0,3)(3,11)(11,14)(14,20)(20,21)


@pytest.fixture(scope="module")
def tok():
    from finealign.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def other_tok():
    from finealign.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer(300)  # other merges: "Paris" is P|ar|is


class SpanScorer(TokenScorer):
    """Rewards on given character spans of TEXT-like responses: 0.5 on "capital", -0.25 on "Paris",
    2.0 terminal (zero-width at the end); other words 0. Raises on a response containing "BAD"."""

    name = "spans"

    def score_tokens(self, prompts, responses):
        out = []
        for r in responses:
            if "BAD" in r:
                raise ValueError("cannot score this one")
            offs, rews = [], []
            pos = 0
            for w in r.split(" "):
                s, e = r.index(w, pos), r.index(w, pos) + len(w)
                offs.append((s, e))
                rews.append(0.5 if w == "capital" else -0.25 if w.startswith("Paris") else 0.0)
                pos = e
            offs.append((len(r), len(r)))
            rews.append(2.0)
            out.append(TokenScores([-1] * len(offs), offs, rews))
        return out

    def score(self, prompts, responses):
        return [sum(t.rewards) for t in self.score_tokens(prompts, responses)]


class ConstScorer(Scorer):
    name = "const"

    def score(self, prompts, responses):
        return [3.0 for _ in responses]


def ids_of(tok, text: str, stop: bool) -> list[int]:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return ids + [tok.eos_token_id] if stop else ids


def test_token_rewards_on_the_action_tokens_and_the_terminal_on_the_stop_token(tok):
    ids = ids_of(tok, TEXT, stop=True)  # The, capital, is, Paris, ., <|im_end|>
    res = engine_rewards(SpanScorer(), ["q"], [ids], tok, stop_ids=[tok.eos_token_id])
    # "capital" (3..11 in the scorer's spans 4..11) -> token ' capital' (3,11): 0.5
    # "Paris." (15..21) ends at char 20 -> token '.' (20,21): -0.25; terminal (21,21) -> the stop token: 2.0
    assert res.rows == [[0.0, 0.5, 0.0, 0.0, -0.25, 2.0]]
    assert res.totals == [2.25] and res.stopped == [True] and res.truncated == 0
    assert sum(res.rows[0]) == pytest.approx(res.totals[0])


def test_truncated_response_terminal_on_last_kept_token_and_counted(tok):
    ids = ids_of(tok, TEXT, stop=False)[:4]  # cut by the length limit: "The capital is Paris"
    res = engine_rewards(SpanScorer(), ["q"], [ids], tok, stop_ids=[tok.eos_token_id])
    # the scorer sees "The capital is Paris": Paris (15,20) -> ' Paris'; terminal (20,20) -> last kept ' Paris'
    assert res.rows == [[0.0, 0.5, 0.0, -0.25 + 2.0]]
    assert res.stopped == [False] and res.truncated == 1


def test_other_tokenizer_keeps_the_sum_and_the_places(other_tok):
    ids = ids_of(other_tok, TEXT, stop=True)  # T|he|␣c|ap|it|al|␣is|␣|P|ar|is|.|<|im_end|>
    res = engine_rewards(SpanScorer(), ["q"], [ids], other_tok, stop_ids=[other_tok.eos_token_id])
    row = res.rows[0]
    assert len(row) == len(ids) == 13
    assert row[5] == 0.5  # 'al' holds "capital"'s last character (10)
    assert row[11] == -0.25  # '.' holds "Paris."'s last character (20)
    assert row[12] == 2.0  # the stop token
    assert sum(row) == pytest.approx(2.25) and sum(abs(x) for x in row) == pytest.approx(2.75)


def test_plain_scorer_and_sequence_granularity_put_the_total_on_the_last_token(tok):
    ids = [ids_of(tok, TEXT, stop=True), ids_of(tok, "The capital", stop=False)]
    plain = engine_rewards(ConstScorer(), ["q", "q"], ids, tok, stop_ids=[tok.eos_token_id])
    assert plain.rows == [[0.0] * 5 + [3.0], [0.0, 3.0]]
    seq = engine_rewards(SpanScorer(), ["q", "q"], ids, tok, stop_ids=[tok.eos_token_id], granularity="sequence")
    # totals: 0.5 - 0.25 + 2.0 = 2.25; "The capital": 0.5 + 2.0 = 2.5
    assert seq.rows == [[0.0] * 5 + [2.25], [0.0, 2.5]]
    with pytest.raises(FinealignError, match="granularity"):
        engine_rewards(SpanScorer(), ["q"], ids[:1], tok, granularity="word")


def test_a_failing_record_is_named_and_nothing_is_zeroed(tok):
    ids = [ids_of(tok, TEXT, stop=True), ids_of(tok, "BAD answer", stop=True)]
    with pytest.raises(FinealignError) as e:
        engine_rewards(SpanScorer(), ["q1", "q2"], ids, tok, stop_ids=[2], labels=["record 0 (uid=a)", "record 1 (uid=b)"])
    msg = str(e.value)
    assert "record 1 (uid=b)" in msg and "cannot score this one" in msg and "1 of 2" in msg


def test_non_finite_reward_is_an_error(tok):
    class NaNScorer(Scorer):
        def score(self, prompts, responses):
            return [float("nan")] * len(responses)

    with pytest.raises(FinealignError, match="non-finite.*record 0"):
        engine_rewards(NaNScorer(), ["q"], [ids_of(tok, TEXT, stop=True)], tok)


def test_to_tensor_is_zero_padded_float32():
    t = to_tensor([[1.0, 2.0], [], [0.5]], 4)
    assert t.dtype == torch.float32 and t.shape == (3, 4)
    assert t.tolist() == [[1.0, 2.0, 0.0, 0.0], [0.0] * 4, [0.5, 0.0, 0.0, 0.0]]
    with pytest.raises(FinealignError, match="record 0"):
        to_tensor([[1.0, 2.0, 3.0]], 2)


def test_estimator_warning_table():
    assert set(KEEPS_POSITIONS).isdisjoint(SUMS_POSITIONS)
    for name in KEEPS_POSITIONS:
        assert estimator_warning(name) is None
    for name in SUMS_POSITIONS:
        assert "sums" in estimator_warning(name)
    assert estimator_warning("grpo", "sequence") is None  # a sequence reward loses nothing
    assert "not one finealign knows" in estimator_warning("my_custom")


def test_trl_reductions_hand_worked():
    r = [0.0, 0.5, -0.25, 2.0]  # the terminal reward last
    assert reduce_token_rewards(r, "sum") == 2.25
    assert reduce_token_rewards(r, "mean") == 0.5625  # 2.25 / 4
    assert reduce_token_rewards(r, "min") == -0.25
    assert reduce_token_rewards(r, "last") == 2.0
    assert reduce_token_rewards([], "mean") == 0.0
    with pytest.raises(FinealignError, match="reduce"):
        reduce_token_rewards(r, "max")


def test_trl_reward_func_reduce():
    f = as_reward_func(SpanScorer(), reduce="min")
    # "The capital": [0, 0.5, 2.0] -> min 0.0; TEXT: [0, 0.5, 0, -0.25, 2.0] -> -0.25
    assert f(prompts=["a", "b"], completions=["The capital", TEXT]) == [0.0, -0.25]
    assert f.__name__ == "spans[min]"
    assert as_reward_func(SpanScorer(), reduce="sum")(prompts=["a"], completions=[TEXT]) == [2.25]
    assert as_reward_func(SpanScorer())(prompts=["a"], completions=[TEXT]) == [2.25]  # score()
    with pytest.raises(FinealignError, match="token scorer"):
        as_reward_func(ConstScorer(), reduce="sum")
