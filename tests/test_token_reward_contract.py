"""The token-reward contract (docs/token-rewards.md) for every built-in token scorer: causal (extending a
response never changes the rewards of its earlier units), the rewards add up to the sequence score, what is
judged on the whole response sits on the stop unit; and the contract's checks name the scorer and record."""

from __future__ import annotations

import random

import pytest

from finealign.errors import FinealignError
from finealign.rewards.base import TokenScores, load_scorer
from finealign.rewards.contract import causal_violations, check_token_scores
from finealign.sim import make_task, oracle_edit

RESPONSES = {
    "facts": ["The capital of France is Paris. The capital of Japan is Kyoto, not Osaka. Peru: Rome",
              "Lima is lovely. Berlin too. Tokyo is the capital of Japan.\nFrance: Madrid\nPeru: Lima",
              "I think it is Cairo or maybe Moscow, Russia. Paris is the capital of France."],
    "constraints": ["A very loyal dog plays in the park. Just a walk in the park with my loyal dog.",
                    "Snow, ice and a warm coat: winter is cold and really dark, very dark."],
    "arithmetic": ["7 + 5 = 13, and 13 - 3 = 10 stickers. So 10 is the answer.", "She has 99. So 99.",
                   "He has 2 * 3 = 6, then 6 + 1 = 9 apples, and 9 - 3 = 6 now. The answer is 6."],
}
PROMPTS = {"facts": ("What are the capitals of these countries?\n- France\n- Japan\n- Peru\n"
                     "Answer with one line per country, as 'Country: Capital'."),
           "constraints": None, "arithmetic": None}


def _prompts(name):
    t = make_task(name)
    if PROMPTS[name]:
        return [PROMPTS[name]]
    return [i.prompt for i in t.sample(random.Random(5), 4)]


@pytest.mark.parametrize("name", ["facts", "constraints", "arithmetic"])
def test_sim_gold_rewards_are_causal_and_sum_to_the_score(name):
    scorer = load_scorer(f"sim:{name}")
    for prompt in _prompts(name):
        for r in RESPONSES[name]:
            edited = oracle_edit(r, scorer.task.judge_prompt(prompt, r))
            for text in (r, edited, ""):
                assert causal_violations(scorer, prompt, text) == [], text
                ts = scorer.score_tokens([prompt], [text])[0]
                score = scorer.score([prompt], [text])[0]
                check_token_scores(scorer.name, 0, text, ts, score)
                assert ts.offsets[-1] == (len(text), len(text))  # the stop unit is always there
                for cut in range(1, len(text)):  # every prefix sums to its own score too
                    p = text[:cut]
                    assert sum(scorer.score_tokens([prompt], [p])[0].rewards) == pytest.approx(
                        scorer.score([prompt], [p])[0])


def test_whole_response_judgements_sit_on_the_stop_unit():
    scorer = load_scorer("sim:arithmetic")
    prompt = ("Anna has 7 stickers. She buys 5 more. She gives away 3. How many stickers does Anna have now? "
              "Answer in one sentence.")
    for text in ("Anna has", "Anna has 99", "Anna has 99 now.", "Anna has 99. So 99."):
        ts = scorer.score_tokens([prompt], [text])[0]
        # all -1 (no number / a wrong final answer), and all of it on the stop unit
        assert ts.rewards[-1] == -1.0 and ts.offsets[-1] == (len(text), len(text))
        assert all(r == 0.0 for r in ts.rewards[:-1])


def test_model_token_scorers_are_causal(tmp_path):
    import torch

    from finealign.models.token_rm import new_token_rm

    model, tok = new_token_rm("tiny-random", mode="full", top_layers=1, seed=0)
    with torch.no_grad():  # a head that reads the hidden state: every token's reward depends on its context
        model.head.weight.normal_(0, 1.0)
    rm_dir = tmp_path / "rm"
    model.save(rm_dir, tok)
    prompt = "Say something about dogs."
    text = "Dogs are loyal. They like to run in the park, and they bark at night."
    for spec in (f"token-rm:{rm_dir}", f"dpo-implicit:{rm_dir / 'backbone'},ref=tiny-random", "direct:tiny-random"):
        scorer = load_scorer(spec)
        assert causal_violations(scorer, prompt, text) == [], spec
        ts = scorer.score_tokens([prompt], [text])[0]
        check_token_scores(scorer.name, 0, text, ts, scorer.score([prompt], [text])[0]
                           if scorer.token_sum_is_score else None)


def test_contract_errors_name_scorer_and_record():
    ok = TokenScores([1, 2, -1], [(0, 3), (3, 5), (5, 5)], [0.5, -0.25, 1.0])
    check_token_scores("x", 0, "hello", ok, 1.25)
    with pytest.raises(FinealignError, match=r"'my-rm', record 3: unit 1 at characters \(3, 9\) lies outside"):
        check_token_scores("my-rm", 3, "hello", TokenScores([1, 2], [(0, 3), (3, 9)], [0.0, 0.0]))
    with pytest.raises(FinealignError, match=r"record 1: token rewards add up to 1.25 but the scorer's score is 2"):
        check_token_scores("my-rm", 1, "hello", ok, 2.0)
    with pytest.raises(FinealignError, match="not finite"):
        check_token_scores("my-rm", 0, "hello", TokenScores([1], [(0, 5)], [float("nan")]))
    with pytest.raises(FinealignError, match="3 token ids, 3 offsets and 2 rewards"):
        check_token_scores("my-rm", 0, "hello", TokenScores([1, 2, 3], [(0, 1), (1, 2), (2, 3)], [0.0, 0.0]))


def test_causal_check_catches_a_reward_that_reads_ahead():
    from finealign.rewards.base import TokenScorer
    from finealign.sim import unit_offsets

    class LastWordPenalty(TokenScorer):  # the old placement: -1 on the last word, whatever follows
        name = "last-word"

        def score(self, prompts, responses):
            return [-1.0 for _ in responses]

        def score_tokens(self, prompts, responses):
            out = []
            for r in responses:
                offs = unit_offsets(r) + [(len(r), len(r))]
                rw = [0.0] * len(offs)
                rw[max(0, len(offs) - 2)] = -1.0
                out.append(TokenScores([-1] * len(offs), offs, rw))
            return out

    bad = causal_violations(LastWordPenalty(), "p", "Anna has 99. So 99.")
    # cuts after "Anna ", "Anna has ", "Anna has 99. ", "Anna has 99. So ": the prefix's last word had -1
    assert len(bad) == 4 and all("has reward -1 in the prefix, 0 in the whole response" in b for b in bad)
    assert "'99.'" not in bad[2] and "'.'" in bad[2]  # the cut after "99. ": its last unit is the period


def test_sim_scorer_reads_a_chat_templated_prompt():
    """RL engines send prompts with the chat template applied: the sim scorer judges the last user turn."""
    scorer = load_scorer("sim:arithmetic")
    q = ("Anna has 7 stickers. She buys 5 more. She gives away 3. How many stickers does Anna have now? "
         "Answer in one sentence.")
    templated = {
        "chatml": f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
        "llama3": f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{q}<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "inst": f"<s>[INST] {q} [/INST]"}
    for name, p in templated.items():
        assert scorer.score([p], ["She has 9."]) == [1.0], name  # 7 + 5 - 3 = 9
