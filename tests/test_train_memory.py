"""Activation checkpointing in the token RM and PPO trainers (issue 17, fault 5): on by default, the
same gradients as without it, and the memory benchmark's JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_cli


def _grads(model, loss_fn) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointing_leaves_token_rm_gradients_unchanged():
    from finealign.models.compat import enable_activation_checkpointing
    from finealign.models.token_rm import new_token_rm

    model, _ = new_token_rm("tiny-random", mode="lora", seed=0)
    model.train()
    ids = torch.randint(5, 200, (3, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2, 18:] = 0  # a padded row

    def loss():
        return (model(ids, mask) * mask).sum()

    plain = _grads(model, loss)
    enable_activation_checkpointing(model.lm)
    assert model.lm.get_base_model().model.gradient_checkpointing
    ckpt = _grads(model, loss)
    assert plain.keys() == ckpt.keys() and plain
    for n in plain:  # recomputation gives the same numbers (float32, up to summation order)
        assert torch.allclose(plain[n], ckpt[n], atol=1e-6, rtol=1e-4), n


@pytest.mark.parametrize("flag,expected", [([], False), (["--gradient-checkpointing"], True),
                                           (["--no-gradient-checkpointing"], False)])
def test_token_rm_trainer_checkpoints_when_asked_or_needed(tmp_path, monkeypatch, flag, expected):
    import finealign.models.compat as compat

    calls = []
    real = compat.enable_activation_checkpointing
    monkeypatch.setattr(compat, "enable_activation_checkpointing", lambda m: (calls.append(m), real(m)))
    data = tmp_path / "edits.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "prompt": f"Q{i}?", "original": f"It is {i + 1}.",
                                        "edited": f"It is {i}."}) + "\n" for i in range(4)))
    assert run_cli(["train", "token-rm", "--data", data, "--model", "tiny-random", "--out", tmp_path / "rm",
                    "--steps", "1", "--batch-size", "2", "--max-length", "64", "--no-progress", *flag]) == 0
    assert bool(calls) is expected


@pytest.mark.parametrize("flag,expected", [([], False), (["--gradient-checkpointing"], True),
                                           (["--no-gradient-checkpointing"], False)])
def test_ppo_checkpoints_the_policy_when_asked_or_needed(tmp_path, monkeypatch, flag, expected):
    import finealign.models.compat as compat

    calls = []
    real = compat.enable_activation_checkpointing
    monkeypatch.setattr(compat, "enable_activation_checkpointing", lambda m: (calls.append(m), real(m)))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {w}."}) + "\n" for w in ("hi", "bye", "yes", "no")))
    assert run_cli(["train", "ppo", "--model", "tiny-random", "--reward", "length", "--prompts", prompts,
                    "--out", tmp_path / "ppo", "--steps", "1", "--batch-size", "2", "--minibatch-size", "2",
                    "--micro-batch-size", "1", "--max-new-tokens", "4", "--device", "cpu", "--quiet", *flag]) == 0
    assert bool(calls) is expected


def test_release_freed_memory_applies_on_linux(monkeypatch):
    from finealign.train.memory import release_freed_memory

    if sys.platform.startswith("linux"):
        assert release_freed_memory() in (True, False)  # glibc: True; musl: no mallopt
    monkeypatch.setenv("FINEALIGN_MALLOC_TUNING", "0")
    assert release_freed_memory() is False


def test_train_memory_benchmark_prints_before_and_after(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_memory.py"), "--model", "tiny-random",
                           "--steps", "1", "--length", "64", "--trainers", "token_rm", "--variants", "before,after"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)["token_rm"]
    for v in ("before", "after"):
        assert res[v]["peak_rss_mb"] > 0 and res[v]["tokens_per_s"] > 0
    # before: no checkpointing; after: checkpointing, both in fp32 (equal precision: a fair ratio)
    assert res["before"]["settings"] == {"gradient_checkpointing": False, "mixed_precision": "no"}
    assert res["after"]["settings"] == {"gradient_checkpointing": True, "mixed_precision": "no"}
    assert res["memory_ratio_before_over_after"] > 0


def test_activation_bytes_hand_worked():
    from finealign.train.memory import activation_bytes

    # per layer (16-bit): s*b*h*34 + 5*a*s*s*b = 100*4*8*34 + 5*2*100*100*4 = 108,800 + 400,000 = 508,800;
    # x 2 layers = 1,017,600; fp32 (4 bytes, twice 16-bit) -> 2,035,200
    assert activation_bytes(4, 100, 2, 8, 2, dtype_bytes=4) == 2_035_200
    assert activation_bytes(4, 100, 2, 8, 2, dtype_bytes=2) == 1_017_600


def test_auto_checkpointing_only_when_activations_would_not_fit(monkeypatch):
    import finealign.train.memory as memory

    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 1000)
    assert memory.use_activation_checkpointing(None, 499, "cpu") is False  # under half the free memory
    assert memory.use_activation_checkpointing(None, 501, "cpu") is True
    assert memory.use_activation_checkpointing(False, 10**12, "cpu") is False  # an explicit setting is obeyed
    assert memory.use_activation_checkpointing(True, 1, "cpu") is True
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: None)
    assert memory.use_activation_checkpointing(None, 1, "cpu") is True  # unknown free memory: the safe side
    assert memory.free_memory_bytes.__module__  # the real one reads /proc/meminfo on Linux


def test_free_memory_reads_the_host(monkeypatch):
    import finealign.train.memory as memory

    free = memory.free_memory_bytes("cpu")
    assert free is None or free > 0
