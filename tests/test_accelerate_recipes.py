"""The accelerate config files under recipes/accelerate: they parse as accelerate configs, and the DDP
one trains on two CPU processes over gloo (what can run without GPUs; FSDP and DeepSpeed need them,
see docs/scaling.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli

RECIPES = REPO / "recipes" / "accelerate"


def test_configs_parse_as_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    got = {p.stem: load_config_from_file(str(p)) for p in sorted(RECIPES.glob("*.yaml"))}
    assert set(got) == {"ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"}
    assert got["ddp"].distributed_type == DistributedType.MULTI_GPU
    assert got["fsdp"].distributed_type == DistributedType.FSDP and got["fsdp"].fsdp_config["fsdp_version"] == 2
    assert [got[f"deepspeed_zero{z}"].deepspeed_config["zero_stage"] for z in (2, 3)] == [2, 3]
    assert all(c.num_machines == 1 and c.mixed_precision == "bf16" for c in got.values())


def _launch(config: str, args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
    cmd = ["accelerate", "launch", "--config_file", str(RECIPES / config), "--num_processes", "2", "--mixed_precision",
           "no", "-m", "finealign.cli.main", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.slow
def test_ddp_config_two_cpu_processes_train_token_rm_like_one_process(tmp_path):
    """DDP (gloo) with 2 processes x batch 2 takes the same optimizer steps as 1 process x batch 4:
    the same global batches, gradients averaged; the saved reward heads agree."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate launcher not found")
    from safetensors.torch import load_file
    from test_train_token_rm import _data

    data = _data(tmp_path)
    common = ["train", "token-rm", "--data", data, "--model", "tiny-random", "--steps", "3", "--lr", "5e-2",
              "--max-length", "64", "--quiet", "--no-lora", "--top-layers", "1", "--device", "cpu", "--seed", "3",
              "--mixed-precision", "no"]  # fp32: the comparison is to 2e-8
    p = _launch("ddp.yaml", common + ["--out", tmp_path / "ddp", "--batch-size", "2"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert run_cli(common + ["--out", tmp_path / "one", "--batch-size", "4"]) == 0
    ddp, one = (load_file(str(tmp_path / d / "token_rm_head.safetensors")) for d in ("ddp", "one"))
    near_init = tmp_path / "near-init"  # (the last of a repeated flag wins)
    assert run_cli(common + ["--out", near_init, "--batch-size", "4", "--steps", "1", "--lr", "1e-9"]) == 0
    start = load_file(str(near_init / "token_rm_head.safetensors"))
    assert max(float((one[k] - start[k]).abs().max()) for k in one) > 1e-3  # training moved the head
    for k in one:
        torch.testing.assert_close(ddp[k], one[k], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_ddp_config_two_cpu_processes_split_dpo_data(tmp_path):
    """TRL's DPOTrainer under the DDP config: 4 pairs, batch 2 per process -> one epoch per step."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate launcher not found")
    from test_train_pref import _pairs

    out = tmp_path / "dpo"
    p = _launch("ddp.yaml", ["train", "dpo", "--model", "tiny-random", "--data", _pairs(tmp_path / "d.jsonl"),
                             "--out", out, "--steps", "2", "--batch-size", "2", "--max-length", "128", "--lr", "1e-2",
                             "--quiet"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    meta = json.loads((out / "finealign_train.json").read_text())
    assert meta["steps"] == 2 and meta["log_history"][-1]["epoch"] == 2.0  # one process would be at 1.0
