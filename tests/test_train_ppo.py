"""``finealign train ppo`` end to end on the tiny random model, with fake scorers (no other models)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finealign.errors import FinealignError
from finealign.rewards.base import Scorer, TokenScorer, TokenScores, register_scorer
from finealign.train.ppo import train_ppo
from finealign.train.ppo_config import PPOConfig

from conftest import REPO, run_cli

PROMPTS = REPO / "src" / "finealign" / "resources" / "prompts" / "mt_bench_demo.jsonl"
TIMING = {"seconds", "tokens_per_s", "seconds_generate", "seconds_reward", "seconds_ref_value", "seconds_update"}


class WordScorer(TokenScorer):
    """Per-word rewards: +1 for a word holding an 'e', -0.25 otherwise (offsets are word spans)."""

    name = "fake-words"

    def score_tokens(self, prompts, responses):
        out = []
        for r in responses:
            offs, rew, pos = [], [], 0
            for w in r.split():
                s = r.index(w, pos)
                pos = s + len(w)
                offs.append((s, pos))
                rew.append(1.0 if "e" in w else -0.25)
            out.append(TokenScores(token_ids=list(range(len(offs))), offsets=offs, rewards=rew))
        return out

    def score(self, prompts, responses):
        return [sum(t.rewards) for t in self.score_tokens(prompts, responses)]


class Vowels(Scorer):
    """The fraction of a response's characters that are lowercase vowels (a reward PPO can push to 1)."""

    name = "vowels"

    def score(self, prompts, responses):
        return [sum(c in "aeiou" for c in r) / max(1, len(r)) for r in responses]


class NaNOnce(Scorer):
    name = "nan-once"

    def __init__(self):
        self.calls = 0

    def score(self, prompts, responses):
        self.calls += 1
        return [float("nan") if self.calls == 1 else 1.0 for _ in responses]


class Broken(Scorer):
    name = "broken"

    def score(self, prompts, responses):
        raise RuntimeError("reward server unreachable")


register_scorer("test-words")(lambda arg=None, **_: WordScorer())
register_scorer("test-broken")(lambda arg=None, **_: Broken())
register_scorer("test-vowels")(lambda arg=None, **_: Vowels())


def cfg(tmp: Path, name: str, **kw) -> PPOConfig:
    base = dict(model="tiny-random", reward="test-words", prompts=str(PROMPTS), out=str(tmp / name), steps=2,
                batch_size=2, minibatch_size=2, micro_batch_size=1, ppo_epochs=1, max_new_tokens=6, device="cpu",
                learning_rate=1e-3, save_every=1, log_samples_every=1, mixed_precision="no")  # fp32: exact comparisons
    base.update(kw)
    return PPOConfig(**base)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_cli_end_to_end_changes_parameters(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli(["train", "ppo", "--model", "tiny-random", "--reward", "test-words", "--prompts", PROMPTS,
                    "--out", out, "--steps", 2, "--batch-size", 4, "--minibatch-size", 2, "--micro-batch-size", 1,
                    "--ppo-epochs", 2, "--max-new-tokens", 8, "--lr", 1e-3, "--device", "cpu", "--quiet",
                    "--mixed-precision", "bf16", "--old-logprobs", "recompute",
                    "--report-to", "tensorboard"])
    assert code == 0
    assert "autocast bf16" in capsys.readouterr().err  # the precision it runs in is printed (status: stderr)
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("score", "reward", "kl", "entropy", "clipfrac", "vf_loss", "response_length", "tokens_per_s"):
        assert all(math.isfinite(r[key]) for r in rows), key
    from safetensors.torch import load_file

    adapter = load_file(str(out / "policy" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: training moved it
    assert (out / "value_head.pt").exists() and list((out / "tb").iterdir())
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2  # 2 samples of step 1 (every 10 steps after)
    # the saved policy loads through the ordinary model loader
    from finealign.models import load_model

    m, _ = load_model(str(out / "policy"), device="cpu")
    assert m is not None
    # rerun of a finished run: nothing to do, same metrics
    assert run_cli(["train", "ppo", "--config", out / "config.yaml", "--quiet"]) == 0
    assert len(metrics(out)) == 2


@pytest.mark.parametrize("advantage,k", [("gae", 1), ("rloo", 3)])
def test_ppo_raises_its_reward(tmp_path, advantage, k):
    """PPO optimises: on the tiny random policy (full fine-tuning, no KL), 200 steps lift the vowel fraction of
    its responses from the random level (about 0.24) well above it, with a critic (GAE) and without (RLOO,
    3 responses per prompt). A flipped advantage or ratio sign, or log-probs of the wrong tokens, keep it at
    (or push it below) the start."""
    scores: list[float] = []
    c = cfg(tmp_path, "learn", steps=200, batch_size=6, minibatch_size=6, micro_batch_size=6, ppo_epochs=2,
            max_new_tokens=12, reward="test-vowels", granularity="sequence", lora=False, kl_coef=0.0, save_every=1000,
            log_samples_every=1000, advantage=advantage, rollouts_per_prompt=k)
    train_ppo(c, on_step=lambda step, total, m: scores.append(m["score"]))
    first, last = sum(scores[:20]) / 20, sum(scores[-20:]) / 20
    print(f"vowel fraction: first 20 steps {first:.3f}, last 20 steps {last:.3f}")
    assert len(scores) == 200 and first < 0.35 and last > first + 0.3, (first, last)


def test_rollouts_per_prompt_groups_each_prompt(tiny):
    """rollouts_per_prompt k: each step samples batch_size / k prompts, each k times in adjacent rows (RLOO's
    groups); over an epoch every prompt is drawn once."""
    from types import SimpleNamespace

    from finealign.train.ppo import prompt_batch

    texts = [f"prompt number {i}" for i in range(4)]
    run = SimpleNamespace(cfg=PPOConfig(prompts="p", out="o", batch_size=6, minibatch_size=6, micro_batch_size=6,
                                        rollouts_per_prompt=3),
                          acc=SimpleNamespace(num_processes=1, process_index=0), tok=tiny[1], texts=texts,
                          items=[SimpleNamespace(prompt=t) for t in texts])
    seen = []
    for step in range(2):  # 4 prompts / 2 per step = one epoch
        b = prompt_batch(run, step)
        assert b.ids.shape[0] == 6 and b.prompts[0:3] == [b.prompts[0]] * 3 and b.prompts[3:6] == [b.prompts[3]] * 3
        assert torch.equal(b.ids[0], b.ids[2]) and torch.equal(b.ids[3], b.ids[5])
        seen += [b.prompts[0], b.prompts[3]]
    assert sorted(seen) == texts


def test_resume_equals_uninterrupted(tmp_path):
    full = cfg(tmp_path, "full", steps=3)
    train_ppo(full)

    class Stop(Exception):
        pass

    def stop_at_2(step, total, m):
        if step == 2:
            raise Stop  # after step 2 is logged, before its checkpoint: the log line must be dropped

    part = cfg(tmp_path, "part", steps=3)
    with pytest.raises(Stop):
        train_ppo(part, on_step=stop_at_2)
    assert len(metrics(Path(part.out))) == 2
    train_ppo(part)  # resumes from the step-1 checkpoint
    a, b = strip_timing(metrics(Path(full.out))), strip_timing(metrics(Path(part.out)))
    assert a == b
    wa = torch.load(Path(full.out) / "checkpoint" / "trainable.pt")
    wb = torch.load(Path(part.out) / "checkpoint" / "trainable.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_token_and_sequence_differ_only_in_placement(tmp_path, tiny):
    from finealign.train.ppo_rollout import encode_prompts, sample, score_rewards

    model, tok = tiny
    torch.manual_seed(0)
    ids, mask, _ = encode_prompts(tok, ["Paris is", "The quick brown fox"], 32)
    ro = sample(model, tok, ids, mask, max_new_tokens=12, temperature=1.0, stop_ids=[tok.eos_token_id])
    ro = ro._replace(texts=["the cat sleeps here", "no"])  # texts the scorer sees (ids unchanged)
    ro = ro._replace(response_ids=[tok(t, add_special_tokens=False)["input_ids"] for t in ro.texts])
    tok_r, tot_t = score_rewards(WordScorer(), ["a", "b"], ro, tok, "token")
    seq_r, tot_s = score_rewards(WordScorer(), ["a", "b"], ro, tok, "sequence")
    # row 0: words the(+1) cat(-0.25) sleeps(+1) here(+1) -> total 2.75; row 1: no(-0.25)
    assert tot_t == tot_s == [2.75, -0.25]
    assert torch.allclose(tok_r.sum(1), seq_r.sum(1))
    assert (tok_r[0] != 0).sum() > 1 and (seq_r != 0).sum(1).tolist() == [1, 1]
    # end to end: same seed -> the same first rollouts and scores; only the update differs
    t = train_ppo(cfg(tmp_path, "tok", steps=1, granularity="token")).metrics
    s = train_ppo(cfg(tmp_path, "seq", steps=1, granularity="sequence")).metrics
    assert t["score"] == s["score"] and t["response_length"] == s["response_length"] and t["kl"] == s["kl"]
    assert t["vf_loss"] != s["vf_loss"]  # same values, different returns: the reward moved
    wt = torch.load(tmp_path / "tok" / "checkpoint" / "trainable.pt")
    ws = torch.load(tmp_path / "seq" / "checkpoint" / "trainable.pt")
    assert any(not torch.equal(wt[k], ws[k]) for k in wt)


def test_sampling_pass_logprobs_equal_a_forward_pass(tiny):
    """pi_old from generate's raw logits == the actor's forward over the finished rollout (left padding, stops)."""
    from finealign.train.ppo_rollout import ActorCritic, encode_prompts, sample

    model, tok = tiny
    torch.manual_seed(3)
    ids, mask, _ = encode_prompts(tok, ["Paris is", "The quick brown fox jumps over", "Hi"], 32)
    ro = sample(model, tok, ids, mask, max_new_tokens=10, temperature=0.7, stop_ids=[tok.eos_token_id],
                with_logprobs=True)
    ac = ActorCritic(model, model.config.hidden_size).eval()
    with torch.no_grad():
        f = ac(ro.input_ids, ro.attention_mask, ro.prompt_len, 0.7)
    m = ro.response_mask
    assert ro.logprobs.shape == m.shape and (ro.logprobs[m == 0] == 0).all()
    assert torch.allclose(ro.logprobs, f.logprobs * m, atol=1e-4), (ro.logprobs - f.logprobs * m).abs().max()
    assert torch.allclose(ro.entropy, f.entropy * m, atol=1e-4)
    assert (ro.logprobs[m == 1] < 0).all()  # real log-probabilities, not placeholders
    # values only: the same values without the vocabulary projection
    with torch.no_grad():
        v = ac(ro.input_ids, ro.attention_mask, ro.prompt_len, 0.7, with_logprobs=False)
    assert torch.allclose(v.values, f.values, atol=1e-5) and (v.logprobs == 0).all()


def test_chunked_head_logprobs_equal_full_logits_with_gradients(tiny):
    """The update pass's LM head over 3 positions at a time (recomputed in backward) gives the full-logits
    log-probs, entropies and gradients (to rounding), at temperature 1 and 0.7."""
    from finealign.core.ppo import entropy_from_logits, logprobs_from_logits
    from finealign.train.ppo_rollout import chunkable_head, head_logprobs

    model, _ = tiny
    assert chunkable_head(model)
    torch.manual_seed(0)
    hidden = torch.randn(2, 7, model.config.hidden_size)
    tokens = torch.randint(0, model.config.vocab_size, (2, 7))
    head = model.get_output_embeddings()
    for temp in (1.0, 0.7):
        h1, h2 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
        lp, ent = head_logprobs(model, h1, tokens, temp, True, chunk=3)  # chunks of 3, 3, 1
        z = head(h2) / temp
        lp_full, ent_full = logprobs_from_logits(z, tokens), entropy_from_logits(z)
        assert lp.shape == ent.shape == (2, 7)
        assert torch.allclose(lp, lp_full, atol=1e-5) and torch.allclose(ent, ent_full, atol=1e-5)
        (lp.sum() + 0.1 * ent.sum()).backward()
        (lp_full.sum() + 0.1 * ent_full.sum()).backward()
        assert torch.allclose(h1.grad, h2.grad, atol=1e-5) and h1.grad.abs().sum() > 0


def test_trim_padding_keeps_outputs(tiny):
    """Dropping all-padding columns (left prompt padding, right response padding) changes no output."""
    from finealign.train.ppo_rollout import ActorCritic, length_sorted_chunks, pad_right, trim_padding

    model, _ = tiny
    # P = 5 (two leading columns are padding in every row), T = 4 (the last column is padding in every row)
    ids = torch.tensor([[0, 0, 0, 7, 8, 9, 10, 11, 0], [0, 0, 5, 6, 7, 12, 13, 0, 0]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1, 1, 0, 0]])
    t_ids, t_mask, p, cut = trim_padding(ids, mask, 5)
    assert (p, cut) == (3, 1) and t_ids.tolist() == [[0, 7, 8, 9, 10, 11], [5, 6, 7, 12, 13, 0]]
    assert pad_right(torch.ones(2, 3), cut).tolist() == [[1, 1, 1, 0], [1, 1, 1, 0]]
    ac = ActorCritic(model, model.config.hidden_size).eval()
    with torch.no_grad():
        full = ac._forward(ids, mask, 5, 1.0, True, True)
        trimmed = ac(ids, mask, 5)
    m = mask[:, 5:].float()
    for a, b in zip(full, trimmed):
        assert a.shape == b.shape == (2, 4)
        assert torch.allclose(a * m, b * m, atol=1e-5)
    chunks = length_sorted_chunks([4, 0, 2, 1, 3], torch.tensor([9, 3, 7, 3, 1]), 2)
    assert chunks == [[4, 1], [3, 2], [0]]  # by length (1, 3, 3, 7, 9), ties by row


def test_recompute_and_bf16_options(tmp_path):
    g = train_ppo(cfg(tmp_path, "gen", steps=1)).metrics
    r = train_ppo(cfg(tmp_path, "rec", steps=1, old_logprobs="recompute")).metrics
    assert g["score"] == r["score"] and abs(g["kl"] - r["kl"]) < 1e-4  # same rollout, pi_old equal to rounding
    b = train_ppo(cfg(tmp_path, "bf16", steps=2, mixed_precision="bf16")).metrics
    assert math.isfinite(b["kl"]) and math.isfinite(b["vf_loss"])
    with pytest.raises(FinealignError, match="old_logprobs"):
        cfg(tmp_path, "bad", old_logprobs="cached")


def test_no_lora_separate_critic_adaptive_kl(tmp_path):
    c = cfg(tmp_path, "full", steps=2, lora=False, value_model="separate", kl_estimator="k3", kl_target=0.5,
            kl_horizon=10, lr_schedule="cosine", warmup_steps=1, ent_coef=0.01)
    rows = train_ppo(c).metrics
    assert rows["kl"] >= 0  # k3 is never negative
    first = metrics(Path(c.out))[0]
    assert rows["kl_coef"] != first["kl_coef"]  # the adaptive controller moved beta
    assert (Path(c.out) / "policy" / "config.json").exists()  # a full model, not an adapter


def test_robustness_nan_reward_and_long_prompts(tmp_path):
    c = cfg(tmp_path, "nan", steps=2, max_prompt_length=8)
    res = train_ppo(c, scorer=NaNOnce())
    rows = metrics(Path(c.out))
    assert rows[0].get("skipped") is True and "score" in rows[1]
    assert res.details["counters"]["skipped_batches"] == 1
    assert res.details["counters"]["truncated_prompts"] == 4  # every MT-Bench prompt is longer than 8 tokens; 2 steps x 2


def test_broken_scorer_and_bad_config(tmp_path, capsys):
    code = run_cli(["train", "ppo", "--model", "tiny-random", "--reward", "test-broken", "--prompts", PROMPTS,
                    "--out", tmp_path / "b", "--steps", 1, "--batch-size", 2, "--minibatch-size", 2,
                    "--micro-batch-size", 2, "--max-new-tokens", 4, "--device", "cpu", "--quiet"])
    assert code == 1
    assert "reward server unreachable" in capsys.readouterr().err
    code = run_cli(["train", "ppo", "--model", "tiny-random", "--reward", "length", "--prompts", PROMPTS,
                    "--out", tmp_path / "m", "--mixed-precision", "fp8", "--quiet"])
    assert code == 1 and "mixed_precision" in capsys.readouterr().err and not (tmp_path / "m").exists()
    with pytest.raises(FinealignError, match="granularity"):
        PPOConfig(granularity="word")
    with pytest.raises(FinealignError, match="does not divide"):
        PPOConfig(batch_size=8, minibatch_size=3)
    with pytest.raises(FinealignError, match="rollouts_per_prompt.*does not divide batch_size 8"):
        PPOConfig(batch_size=8, rollouts_per_prompt=3)
    with pytest.raises(FinealignError, match="rloo needs 2 or more responses per prompt: set --rollouts-per-prompt"):
        PPOConfig(advantage="rloo")
    y = tmp_path / "c.yaml"
    y.write_text("kl_coeff: 0.1\n")
    with pytest.raises(FinealignError, match="kl_coeff: not a setting of PPOConfig"):
        PPOConfig.from_overrides(y)
    y.write_text("kl_coef: 0.2\nsteps: 7\nprompts: p.jsonl\nout: o\n")
    assert PPOConfig.from_overrides(y, steps=3).kl_coef == 0.2 and PPOConfig.from_overrides(y, steps=3).steps == 3
    # resuming into a folder holding another configuration is refused
    train_ppo(cfg(tmp_path, "r", steps=1))
    with pytest.raises(FinealignError, match="another configuration"):
        train_ppo(cfg(tmp_path, "r", steps=2, kl_coef=0.5))


@pytest.mark.slow
def test_two_processes_ddp_gloo(tmp_path):
    """Two CPU processes under ``accelerate launch`` (DDP, gloo) train one policy; weights stay in sync."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate launcher not found")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # --multi_gpu starts the processes through torchrun; without CUDA they run on CPU over gloo (MULTI_CPU).
    # (``--cpu --num_processes 2`` would start ONE process in accelerate 1.x unless mpirun is configured.)
    env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "finealign.cli.main", "train", "ppo", "--model", "tiny-random",
           "--reward", "length", "--prompts", str(PROMPTS), "--out", str(out),
           "--steps", "2", "--batch-size", "2", "--minibatch-size", "2", "--micro-batch-size", "1",
           "--ppo-epochs", "1", "--max-new-tokens", "8", "--lr", "1e-3", "--device", "cpu", "--quiet"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["processes"] == 2
    from safetensors.torch import load_file

    adapter = load_file(str(out / "policy" / "adapter_model.safetensors"))
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)


def test_stop_unit_lands_on_the_policy_stop_token(tiny):
    """The gold reward's stop unit (len, len) goes onto the sampled stop token; a truncated response (no stop
    token) gets it on its last kept token; an empty response on its stop token alone."""
    from finealign.rewards.base import load_scorer
    from finealign.train.ppo_rollout import Rollout, score_rewards

    _, tok = tiny
    prompt = ("Anna has 7 stickers. She buys 5 more. She gives away 3. How many stickers does Anna have now? "
              "Answer in one sentence.")
    texts = ["Anna has 99", "Anna has 99", ""]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n = len(ids[0])
    valid = [n + 1, n, 1]  # row 0 sampled its stop token; row 1 was cut at max_new_tokens; row 2 stopped at once
    mask = torch.tensor([[1.0] * v + [0.0] * (n + 1 - v) for v in valid])
    ro = Rollout(None, None, mask, 0, texts, ids, None, None)
    r, totals = score_rewards(load_scorer("sim:arithmetic"), [prompt] * 3, ro, tok, "token", check_sum=True)
    assert totals == [-1.0, -1.0, -1.0]  # a wrong final answer / no number: -1, judged at the stop
    assert r[0, n].item() == -1.0 and r[0, :n].abs().sum().item() == 0.0  # on the stop token, nothing before
    assert r[1, n - 1].item() == -1.0 and r[1].abs().sum().item() == 1.0  # truncated: the last kept token
    assert r[2, 0].item() == -1.0


def test_token_scorer_breaking_the_contract_is_named(tiny):
    from finealign.rewards.base import TokenScorer, TokenScores
    from finealign.train.ppo_rollout import Rollout, score_rewards

    _, tok = tiny

    class Broken(TokenScorer):
        name = "broken-rm"

        def __init__(self, past_end):
            self.past_end = past_end

        def score(self, prompts, responses):
            return [5.0] * len(responses)

        def score_tokens(self, prompts, responses):
            n = len(responses[1])
            return [TokenScores([-1], [(0, len(r))], [1.0]) for r in responses[:1]] + \
                [TokenScores([-1], [(0, n + 3 if self.past_end else n)], [1.0])]

    texts = ["hi there", "ok"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    mask = torch.ones(2, max(map(len, ids)))
    ro = Rollout(None, None, mask, 0, texts, ids, None, None)
    with pytest.raises(FinealignError, match=r"'broken-rm', record 1: unit 0 at characters \(0, 5\) lies outside"):
        score_rewards(Broken(True), ["a", "b"], ro, tok, "token")
    with pytest.raises(FinealignError, match=r"'broken-rm', record 0: token rewards add up to 1 but the scorer's score is 5"):
        score_rewards(Broken(False), ["a", "b"], ro, tok, "token", check_sum=True)


def test_critic_learns_a_fixed_batch(tiny_fresh):
    """The value head starts at the batch's mean return (zero weights) and, in its own parameter group, halves
    the value error on a fixed batch within 40 Adam steps at lr 1e-2 (measured: 34 steps; 1e-3: over 200)."""
    from finealign.core.ppo import masked_mean, rewards_to_go, value_loss
    from finealign.train.accel import adamw
    from finealign.train.ppo_rollout import ActorCritic, encode_prompts, sample

    policy, tok = tiny_fresh
    torch.manual_seed(0)
    ac = ActorCritic(policy, policy.config.hidden_size)
    ids, mask, _ = encode_prompts(tok, ["Paris is", "The quick brown fox", "One two", "Hello"], 32)
    ro = sample(policy, tok, ids, mask, max_new_tokens=12, temperature=1.0, stop_ids=[tok.eos_token_id])
    m = ro.response_mask
    G = rewards_to_go(torch.randn(m.shape, generator=torch.Generator().manual_seed(1)) * m, m)
    ac.init_value_bias(float(masked_mean(G, m)))
    v0 = ac(ro.input_ids, ro.attention_mask, ro.prompt_len, with_logprobs=False).values
    assert torch.allclose(v0[m.bool()], masked_mean(G, m).expand(int(m.sum())))  # every value at the mean
    opt = adamw(ac.critic_parameters(), lr=1e-2)
    errs = []
    for _ in range(40):
        v = ac(ro.input_ids, ro.attention_mask, ro.prompt_len, with_logprobs=False).values
        loss = value_loss(v, v.detach(), G, m, clip=None).loss
        errs.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert min(errs) <= errs[0] / 2


def test_critic_warmup_freezes_the_policy(tmp_path):
    class Stop(Exception):
        pass

    def stop(step, total, m):
        if step == 2:  # before step 2's checkpoint: the checkpoint holds step 1, the warm-up step
            raise Stop

    c = cfg(tmp_path, "warm", steps=3, critic_warmup=1, advantage="gae")
    with pytest.raises(Stop):
        train_ppo(c, on_step=stop)
    w = torch.load(Path(c.out) / "checkpoint" / "trainable.pt")
    lora_b = [k for k in w if "lora_B" in k]
    assert lora_b and all(torch.count_nonzero(w[k]) == 0 for k in lora_b)  # the policy did not move
    assert w["value_head.bias"].abs().item() > 0 and torch.count_nonzero(w["value_head.weight"]) > 0
    train_ppo(c)  # resumes; after the warm-up the policy learns
    w2 = torch.load(Path(c.out) / "checkpoint" / "trainable.pt")
    assert any(torch.count_nonzero(w2[k]) > 0 for k in lora_b)
    with pytest.raises(FinealignError, match="critic_warmup: 3 warm-up steps leave none of the 3 --steps"):
        cfg(tmp_path, "bad", steps=3, critic_warmup=3)
    with pytest.raises(FinealignError, match="advantage prime has no critic to warm up"):
        cfg(tmp_path, "bad", steps=3, critic_warmup=1, advantage="prime", rollouts_per_prompt=2)


@pytest.mark.parametrize("advantage", ["prime", "reinforce++"])
def test_critic_free_estimators_train(tmp_path, advantage):
    res = train_ppo(cfg(tmp_path, advantage, steps=1, advantage=advantage, rollouts_per_prompt=2))
    assert math.isfinite(res.metrics["pg_loss"]) and res.metrics["vf_loss"] >= 0


def test_sim_reward_for_other_prompts_is_refused_before_anything_is_written(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text(json.dumps({"prompt": "Write one sentence about dogs.", "meta": {"sim": {"task": "constraints"}}}) + "\n")
    with pytest.raises(FinealignError, match="prompts made for sim task 'constraints', but the reward is sim:arithmetic"):
        train_ppo(cfg(tmp_path, "mismatch", reward="sim:arithmetic", prompts=str(p)))
    assert not (tmp_path / "mismatch").exists()
