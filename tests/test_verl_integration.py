"""finealign's rewards inside verl 0.9, against the real package (runs in its own virtual environment:
.ci/run builds it; skipped where verl is not installed).

verl's own ``DataProto`` batches (prompts left-padded, responses right-padded, the stop token inside the
attention mask, a response cut by ``max_response_length``), verl's own advantage functions on the
``token_level_scores`` finealign returns: shapes, placement, sums equal to the sequence score, a reward
model with another tokenizer than the policy, a failing record named; the reward-loop manager
(``run_single`` batched, ``assemble_rm_scores``) and the agent-loop rebuild of per-token ``rm_scores``.
"""

from __future__ import annotations

import asyncio
import json
import warnings

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.verl
pytest.importorskip("verl", reason="verl is not installed here: these tests run in the verl environment "
                                   "that .ci/run builds (python3 -m venv .venv-verl)")

from omegaconf import OmegaConf  # noqa: E402  (verl's dependency)
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

from finealign.errors import FinealignError  # noqa: E402
from finealign.integrations import verl as fv  # noqa: E402
from finealign.integrations.token_rewards import KEEPS_POSITIONS, SUMS_POSITIONS  # noqa: E402
from finealign.rewards.base import TokenScorer, TokenScores  # noqa: E402

from test_token_rewards import TEXT, SpanScorer  # noqa: E402

PROMPTS = ["Name the capital.", "Capital of France?", "Say it."]
RESPONSES = [(TEXT, True), ("The capital", True), (" ".join([TEXT] * 3), False)]
T = 10  # max_response_length: the third response is cut


@pytest.fixture(scope="module")
def tok():
    from finealign.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


def make_batch(tok, prompts=PROMPTS, responses=RESPONSES, width=T) -> DataProto:
    """A verl rollout batch: prompts (B, P) left-padded, responses (B, width) right-padded, attention_mask
    (B, P + width) covering each response's tokens up to and including its stop token."""
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    r_ids = []
    for text, stop in responses:
        ids = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if stop else [])
        r_ids.append(ids[:width])
    P = max(map(len, p_ids))
    B = len(prompts)
    pad = tok.pad_token_id
    prompts_t = torch.full((B, P), pad)
    resp_t = torch.full((B, width), pad)
    mask = torch.zeros((B, P + width), dtype=torch.long)
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
        prompts_t[i, P - len(p):] = torch.tensor(p)
        resp_t[i, : len(r)] = torch.tensor(r)
        mask[i, P - len(p): P + len(r)] = 1
    raw = np.empty(B, dtype=object)
    raw[:] = [[{"role": "user", "content": p}] for p in prompts]
    return DataProto.from_dict(
        tensors={"prompts": prompts_t, "responses": resp_t, "attention_mask": mask,
                 "input_ids": torch.cat([prompts_t, resp_t], 1), "response_mask": mask[:, P:].clone()},
        non_tensors={"raw_prompt": raw, "uid": np.array([f"u{i}" for i in range(B)], dtype=object),
                     "data_source": np.array(["sim"] * B, dtype=object)})


def test_reward_manager_tensor_shape_placement_and_sums(tok):
    data = make_batch(tok)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mgr = fv.FinealignRewardManager(tok, num_examine=0, scorer=SpanScorer(), adv_estimator="gae")
        out = mgr(data, return_dict=True)
    scores = out["reward_tensor"]
    assert scores.shape == data.batch["responses"].shape and scores.dtype == torch.float32
    # TEXT + stop: The|capital|is|Paris|.|<stop> -> [0, .5, 0, 0, -.25, 2.0] then padding
    assert scores[0].tolist() == [0.0, 0.5, 0.0, 0.0, -0.25, 2.0, 0.0, 0.0, 0.0, 0.0]
    assert scores[1].tolist() == [0.0, 0.5, 2.0] + [0.0] * 7  # The|capital|<stop>
    # cut at 10 tokens: the scorer sees the kept text; terminal 2.0 on the last kept token (index 9)
    n = data.batch["attention_mask"][2, data.batch["prompts"].shape[1]:].sum()
    assert int(n) == T  # kept: "The capital is Paris. The capital is Paris." (10 tokens, no stop token)
    # the last '.' carries Paris.'s -0.25 and the terminal 2.0: 1.75
    assert scores[2].tolist() == [0.0, 0.5, 0.0, 0.0, -0.25, 0.0, 0.5, 0.0, 0.0, 1.75]
    assert out["reward_extra_info"]["finealign_truncated"] == [0.0, 0.0, 1.0]
    assert scores.sum(-1).tolist() == pytest.approx(out["reward_extra_info"]["finealign_score"])
    assert any("cut by the length limit" in str(x.message) for x in w)
    assert not any("sums" in str(x.message) for x in w)  # gae keeps positions: no estimator warning


def test_verl_advantages_on_finealign_rewards(tok):
    data = make_batch(tok)
    scores = fv.FinealignRewardManager(tok, scorer=SpanScorer())(data)
    mask = data.batch["response_mask"].float()
    totals = scores.sum(-1)
    # GAE with gamma = lambda = 1 and zero values: returns are the rewards-to-go, returns[:, 0] the sequence score
    adv, ret = core_algos.compute_gae_advantage_return(token_level_rewards=scores, values=torch.zeros_like(scores),
                                                       response_mask=mask, gamma=1.0, lam=1.0)
    assert adv.shape == ret.shape == scores.shape
    assert ret[:, 0].tolist() == pytest.approx(totals.tolist())
    togo = scores.flip(-1).cumsum(-1).flip(-1)
    assert torch.allclose(ret * mask, togo * mask)
    # row 0: 0.5 on ' capital' then -0.25 on '.': the token after 'capital' sees 2.25 - 0.5 = 1.75 to go
    assert ret[0, 2].item() == pytest.approx(1.75)
    cfg = OmegaConf.create({"gamma": 1.0})
    adv, ret = core_algos.compute_reinforce_plus_plus_outcome_advantage(token_level_rewards=scores,
                                                                       response_mask=mask, config=cfg)
    assert ret[:, 0].tolist() == pytest.approx(totals.tolist())
    assert torch.allclose(ret, togo * mask)


def _permuted(scores, mask):
    """The same rewards moved within each row (reversed over its valid tokens): same sums, other positions."""
    out = scores.clone()
    for i in range(scores.shape[0]):
        n = int(mask[i].sum())
        out[i, :n] = scores[i, :n].flip(0)
    return out


def test_estimator_table_matches_verl(tok):
    """An estimator 'sums positions' iff moving rewards within a response leaves its advantages unchanged."""
    data = make_batch(tok)
    scores = fv.FinealignRewardManager(tok, scorer=SpanScorer())(data)
    mask = data.batch["response_mask"].float()
    moved = _permuted(scores, mask)
    assert not torch.equal(moved, scores)
    index = np.array(["g", "g", "g"], dtype=object)
    cfg = OmegaConf.create({"gamma": 1.0, "norm_adv_by_std_in_grpo": True})
    kw = dict(response_mask=mask, index=index, config=cfg)
    for name in ("grpo", "rloo", "opo", "reinforce_plus_plus_baseline", "gpg"):
        assert name in SUMS_POSITIONS
        fn = core_algos.get_adv_estimator_fn(name)
        a1, _ = fn(token_level_rewards=scores, **kw)
        a2, _ = fn(token_level_rewards=moved, **kw)
        assert torch.allclose(a1, a2), name
    for name in ("reinforce_plus_plus", "remax"):
        assert name in KEEPS_POSITIONS
        fn = core_algos.get_adv_estimator_fn(name)
        extra = {"reward_baselines": torch.zeros(3)} if name == "remax" else {}
        a1, _ = fn(token_level_rewards=scores, **kw, **extra)
        a2, _ = fn(token_level_rewards=moved, **kw, **extra)
        assert not torch.allclose(a1, a2), name


class OtherTokenizerScorer(TokenScorer):
    """A reward model with its own tokenizer: 0.1 per token of its tokenization, 1.0 terminal."""

    name = "other-tok"

    def __init__(self, tok):
        self.tok = tok

    def score_tokens(self, prompts, responses):
        out = []
        for r in responses:
            enc = self.tok(r, add_special_tokens=False, return_offsets_mapping=True)
            offs = [tuple(o) for o in enc["offset_mapping"]] + [(len(r), len(r))]
            out.append(TokenScores(enc["input_ids"] + [-1], offs, [0.1] * len(enc["input_ids"]) + [1.0]))
        return out

    def score(self, prompts, responses):
        return [sum(t.rewards) for t in self.score_tokens(prompts, responses)]


def test_reward_model_with_another_tokenizer(tok):
    from finealign.models.tiny import build_tiny_tokenizer

    other = build_tiny_tokenizer(300)
    data = make_batch(tok, responses=[(TEXT, True)], prompts=PROMPTS[:1])
    scores = fv.FinealignRewardManager(tok, scorer=OtherTokenizerScorer(other))(data)
    # TEXT is 12 tokens for the reward model: 12 * 0.1 + 1.0 = 2.2 in all, 1.0 on the policy's stop token (index 5)
    assert scores.sum().item() == pytest.approx(2.2)
    assert scores[0, 5].item() == pytest.approx(1.0)
    # ' capital' (3..11) holds the RM's ' c', 'ap', 'it', 'al': 0.4
    assert scores[0, 1].item() == pytest.approx(0.4)


def test_failing_record_is_named_not_zeroed(tok):
    data = make_batch(tok, responses=[(TEXT, True), ("BAD answer", True), ("The capital", True)])
    with pytest.raises(FinealignError, match=r"record 1 \(uid=u1, data_source=sim\)"):
        fv.FinealignRewardManager(tok, scorer=SpanScorer())(data)


def _loop_config(streaming: bool, ours: bool, estimator: str = "gae"):
    agent = {"agent_loop_manager_class": fv.AGENT_LOOP_MANAGER if ours else None}
    return OmegaConf.create({
        "reward": {"reward_kwargs": {}, "reward_model": {"enable": not streaming, "enable_resource_pool": False}},
        "actor_rollout_ref": {"rollout": {"agent": agent}},
        "algorithm": {"adv_estimator": estimator}})


class CountingScorer(SpanScorer):
    calls = 0

    def score_tokens(self, prompts, responses):
        CountingScorer.calls += 1
        return super().score_tokens(prompts, responses)


def _run_singles(mgr, data):
    async def go():
        return await asyncio.gather(*[mgr.run_single(data[i: i + 1]) for i in range(len(data))])

    return asyncio.run(go())


def test_reward_loop_streaming_with_the_agent_loop_rebuild(tok, monkeypatch):
    data = make_batch(tok)
    expected = fv.FinealignRewardManager(tok, scorer=SpanScorer())(data)
    monkeypatch.setitem(fv._SCORERS, "counting", CountingScorer())
    cfg = _loop_config(streaming=True, ours=True)
    cfg.reward.reward_kwargs.finealign_scorer = "counting"
    fv.FinealignRewardLoopManager._class_initialized = False
    mgr = fv.FinealignRewardLoopManager(cfg, tok, None)
    CountingScorer.calls = 0
    outs = _run_singles(mgr, data)
    assert CountingScorer.calls == 1  # three concurrent run_single calls, one scoring call
    assert [o["reward_score"] for o in outs] == pytest.approx(expected.sum(-1).tolist())  # floats: verl's stream
    # what verl's agent loop builds from them: totals on the last token, the extra fields as arrays
    P = data.batch["prompts"].shape[1]
    last = data.batch["attention_mask"][:, P:].sum(-1) - 1
    rm = torch.zeros_like(expected)
    rm[torch.arange(3), last] = torch.tensor([o["reward_score"] for o in outs])
    keys = list(outs[0]["reward_extra_info"])
    out = DataProto.from_dict(tensors={**{k: data.batch[k] for k in ("prompts", "responses", "attention_mask")},
                                       "rm_scores": rm},
                              non_tensors={k: np.array([o["reward_extra_info"][k] for o in outs]) for k in keys},
                              meta_info={"reward_extra_keys": keys})
    out = fv.rebuild_rm_scores(out)
    assert torch.equal(out.batch["rm_scores"], expected)
    assert fv.TOKEN_KEY not in out.non_tensor_batch and fv.TOKEN_KEY not in out.meta_info["reward_extra_keys"]
    assert out.non_tensor_batch["finealign_truncated"].tolist() == [0.0, 0.0, 1.0]


def test_reward_loop_colocated_assemble_and_warnings(tok, monkeypatch):
    data = make_batch(tok)
    expected = fv.FinealignRewardManager(tok, scorer=SpanScorer())(data)
    monkeypatch.setitem(fv._SCORERS, "spans", SpanScorer())
    cfg = _loop_config(streaming=False, ours=False, estimator="grpo")
    cfg.reward.reward_kwargs.finealign_scorer = "spans"
    fv.FinealignRewardLoopManager._class_initialized = False
    fv._WARNED.clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mgr = fv.FinealignRewardLoopManager(cfg, tok, None)
    assert any("'grpo' sums" in str(x.message) for x in w)
    outs = _run_singles(mgr, data)
    assert all(isinstance(o["reward_score"], list) for o in outs)  # colocated: per-token rows
    rm = fv.FinealignRewardLoopManager.assemble_rm_scores(data, [o["reward_score"] for o in outs])
    assert torch.equal(rm, expected)
    floats = fv.FinealignRewardLoopManager.assemble_rm_scores(data, [1.0, 2.0, 3.0])
    P = data.batch["prompts"].shape[1]
    last = data.batch["attention_mask"][:, P:].sum(-1) - 1
    assert floats[torch.arange(3), last].tolist() == [1.0, 2.0, 3.0] and floats.sum().item() == 6.0


def test_streaming_without_our_agent_loop_warns(tok, monkeypatch):
    monkeypatch.setitem(fv._SCORERS, "spans", SpanScorer())
    cfg = _loop_config(streaming=True, ours=False)
    cfg.reward.reward_kwargs.finealign_scorer = "spans"
    fv.FinealignRewardLoopManager._class_initialized = False
    fv._WARNED.clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mgr = fv.FinealignRewardLoopManager(cfg, tok, None)
    assert any("agent_loop_manager_class" in str(x.message) for x in w)
    outs = _run_singles(mgr, make_batch(tok))
    assert all(fv.TOKEN_KEY not in o["reward_extra_info"] for o in outs)  # no JSON field nobody would read


def test_agent_loop_manager_is_verls():
    from verl.experimental.agent_loop import AgentLoopManager

    from finealign.integrations.verl_agent_loop import FinealignAgentLoopManager

    assert issubclass(FinealignAgentLoopManager, AgentLoopManager)
    assert fv.AGENT_LOOP_MANAGER == f"{FinealignAgentLoopManager.__module__}.{FinealignAgentLoopManager.__name__}"
    json.dumps([0.5])  # (the transport of the rows)


def test_recipe_composes_with_verls_config_and_loads_the_managers(tok, monkeypatch):
    """recipes/verl/fine_grained_ppo_gae.yaml on top of verl's own ppo_trainer config: verl resolves finealign's
    reward manager from it, and the manager runs per-token with the agent-loop rebuild."""
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    from conftest import REPO

    with initialize_config_dir(config_dir=str(REPO / "recipes" / "verl"), version_base=None):
        cfg = compose(config_name="fine_grained_ppo_gae", overrides=["reward.reward_kwargs.finealign_scorer=spans"])
    assert cfg.algorithm.adv_estimator == "gae" and cfg.algorithm.use_kl_in_reward
    assert resolve_reward_manager_cls(cfg) is fv.FinealignRewardLoopManager
    monkeypatch.setitem(fv._SCORERS, "spans", SpanScorer())
    fv.FinealignRewardLoopManager._class_initialized = False
    mgr = fv.FinealignRewardLoopManager(cfg, tok, None)
    assert mgr.streaming and mgr.rows_in_extra
    outs = _run_singles(mgr, make_batch(tok))
    assert json.loads(outs[0]["reward_extra_info"][fv.TOKEN_KEY]) == [0.0, 0.5, 0.0, 0.0, -0.25, 2.0]


def test_gpu_benchmark_overrides_compose_with_the_recipe(tmp_path):
    """benchmarks/gpu/verl_token_vs_sequence.py has not run on a GPU yet: at least its verl overrides name keys
    of verl's config, and its prompt file is verl's RL parquet with prompts the sim scorer accepts."""
    import importlib.util

    import pandas as pd
    from hydra import compose, initialize_config_dir

    from conftest import REPO
    from finealign.rewards import load_scorer

    spec = importlib.util.spec_from_file_location("bench", REPO / "benchmarks" / "gpu" / "verl_token_vs_sequence.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--steps", "2"])
    data = tmp_path / "p.parquet"
    bench.write_prompts(args.task, 4, 0, data)
    df = pd.read_parquet(data)
    msgs = [dict(m) for m in df["prompt"][0]]
    assert load_scorer(args.scorer).score([msgs], [""]) == [pytest.approx(-1.0, abs=1.0)]
    for g in ("token", "sequence"):
        with initialize_config_dir(config_dir=str(REPO / "recipes" / "verl"), version_base=None):
            cfg = compose(config_name="fine_grained_ppo_gae", overrides=bench.overrides(g, args, tmp_path, data, tmp_path))
        assert cfg.reward.reward_kwargs.finealign_granularity == g and cfg.trainer.total_training_steps == 2
    line = "step:3 - critic/score/mean:0.25 - timing_s/step:2.5 - actor/pg_loss:-1e-3"
    assert bench.parse_steps(line) == [{"step": 3.0, "critic/score/mean": 0.25, "timing_s/step": 2.5,
                                        "actor/pg_loss": -1e-3}]
