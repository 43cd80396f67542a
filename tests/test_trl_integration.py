"""finealign scorers as TRL reward functions: call signature, both data formats, a few GRPO steps."""

from __future__ import annotations

import torch

from finealign.rewards import Scorer, load_scorer
from finealign.rewards.trl_adapter import as_reward_func, completion_text


class CountScorer(Scorer):
    """Score = number of 'a' characters; records what it was called with."""

    name = "count_a"

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses):
        self.calls.append((list(prompts), list(responses)))
        return [float(r.count("a")) for r in responses]


def test_standard_format_and_name():
    f = as_reward_func(CountScorer())
    assert f.__name__ == "count_a"
    # "banana" has 3 a's, "apple" 1
    assert f(prompts=["p1", "p2"], completions=["banana", "apple"], completion_ids=[[1], [2]]) == [3.0, 1.0]


def test_conversational_format_passes_messages():
    sc = CountScorer()
    f = as_reward_func(sc, name="my_reward", scale=2.0)
    prompts = [[{"role": "user", "content": "hi"}]]
    comps = [[{"role": "assistant", "content": "aa"}]]
    assert f(prompts=prompts, completions=comps, extra_column=[1]) == [4.0]  # 2 a's x scale 2
    assert f.__name__ == "my_reward"
    assert sc.calls[0] == ([[{"role": "user", "content": "hi"}]], ["aa"])


def test_empty_completion_is_scored_as_it_is_unless_a_fixed_reward_is_given():
    sc = CountScorer()
    f = as_reward_func(sc)
    assert f(prompts=["p", "p", "p"], completions=["aaa", "", "a"]) == [3.0, 0.0, 1.0]  # "" has 0 a's
    assert sc.calls[0][1] == ["aaa", "", "a"]
    g = as_reward_func(sc, empty_reward=-5.0)
    assert g(prompts=["p", "p"], completions=[" ", "aa"]) == [-5.0, 2.0]
    assert sc.calls[-1][1] == ["aa"]  # the fixed reward is not asked of the scorer


def test_spec_string_and_length():
    f = as_reward_func("length")
    assert f.__name__ == "length"
    assert f(prompts=["x"], completions=[[{"role": "assistant", "content": "abcd"}]]) == [4.0]
    assert completion_text({"role": "assistant", "content": "z"}) == "z"


def test_grpo_steps_change_parameters(tmp_path, tiny_fresh):
    """A few GRPO steps on the tiny model with the FLR scorer (on its own tiny model) and the length
    scorer as ``reward_funcs``: the policy's parameters change and TRL logs both rewards by name."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tok = tiny_fresh
    funcs = [as_reward_func(load_scorer("flr:tiny-random"), name="flr"), as_reward_func(load_scorer("length"))]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Say something about {w}."}]}
                            for w in ("the sea", "France", "a fox", "poems")])
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=2, learning_rate=5e-3, logging_steps=1, report_to="none",
                      use_cpu=True, save_strategy="no", temperature=1.0, reward_weights=[1.0, 0.1])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert changed, "no parameter changed after GRPO steps"
    logged = {k for h in trainer.state.log_history for k in h}
    assert any("flr" in k for k in logged), logged  # TRL logs the reward under the function's __name__
