"""Peak memory and tokens/s of the token RM trainer and PPO: the old defaults vs the new, in one run.

Each (trainer, variant) runs in a fresh subprocess so its peak RSS (``resource.getrusage``, the whole
process: weights, optimizer, activations, rollouts) is its own, on the same synthetic data at equal
batch and length:

* ``before``: no activation checkpointing, no autocast (the defaults before issue 17);
* ``after``: activation checkpointing on (the default), float32 (``--mixed-precision no``);
* ``after_bf16``: checkpointing plus ``--mixed-precision bf16`` (CPU autocast; AMX CPUs and GPUs);
* ``defaults``: every default as it is (``--mixed-precision auto``: bf16 where measured faster);
* ``before_bf16``: no checkpointing, bf16 autocast (to separate the two effects);
* ``after_default_malloc``: ``after`` with ``FINEALIGN_MALLOC_TUNING=0`` (see train/memory.py).

Token RM: ``--batch-size`` pairs (2 x rows per step) of ``--length`` tokens, LoRA on all layers.
PPO: ``--ppo-batch`` rollouts of ``--prompt-length`` + ``--new-tokens`` tokens (fixed lengths, EOS
ignored), micro-batches of 4, reward ``length``. tokens/s is the trainers' own logged figure, averaged
over the steps after the first (warm-up). Prints one JSON object.

    python benchmarks/train_memory.py                          # defaults: smollm2-135m-instruct, 4 pairs x 512
    python benchmarks/train_memory.py --model tiny-random --steps 2 --length 128 --prompt-length 64 --new-tokens 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "before": {"gradient_checkpointing": False, "mixed_precision": "no"},
    "after": {"gradient_checkpointing": True, "mixed_precision": "no"},
    "after_bf16": {"gradient_checkpointing": True, "mixed_precision": "bf16"},
    "before_bf16": {"gradient_checkpointing": False, "mixed_precision": "bf16"},
    # checkpointing without train/memory.py's malloc setting
    "after_default_malloc": {"gradient_checkpointing": True, "mixed_precision": "no"},
    "defaults": {},  # every default as it is (mixed_precision auto: bf16 on AMX CPUs)
}
ENV = {"after_default_malloc": {"FINEALIGN_MALLOC_TUNING": "0"}}


def _words(n: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    vocab = ["river", "stone", "market", "quietly", "seven", "because", "light", "paper", "north", "garden",
             "answer", "simple", "weather", "number", "between", "morning"]
    return " ".join(rng.choice(vocab) for _ in range(n))


def _data(folder: Path, n: int, length: int, prompt_length: int) -> tuple[Path, Path]:
    """Edit pairs whose prompt is long enough that every sequence is cut to ``length`` tokens, and
    PPO prompts of about ``prompt_length`` tokens (cut to it)."""
    edits, prompts = folder / "edits.jsonl", folder / "prompts.jsonl"
    with open(edits, "w") as f:
        for i in range(n):
            resp = _words(max(4, min(40, length // 12)), i)  # the response fits with room for context
            f.write(json.dumps({"id": str(i), "prompt": _words(length * 2, 1000 + i), "original": resp,
                                "edited": resp.replace(resp.split()[3], "changed", 1)}) + "\n")
    with open(prompts, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": _words(prompt_length * 2, 2000 + i)}) + "\n")
    return edits, prompts


def child(spec: dict) -> dict:
    """Run one trainer variant in this process; return peak RSS (MB) and tokens/s."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out = Path(spec["out"])
    t0 = time.perf_counter()
    if spec["trainer"] == "token_rm":
        from finealign.train.token_rm import train_token_rm
        from finealign.train.token_rm_config import TokenRMConfig

        cfg = TokenRMConfig(data=[spec["edits"]], out=str(out), model=spec["model"], steps=spec["steps"],
                            batch_size=spec["batch_size"], max_length=spec["length"], eval_every=0, save_every=0,
                            log_every=1, device="cpu", **spec["overrides"])
        train_token_rm(cfg)
    else:
        from finealign.train.ppo import train_ppo
        from finealign.train.ppo_config import PPOConfig

        cfg = PPOConfig(policy=spec["model"], reward="length", prompts=spec["prompts"], out=str(out),
                        steps=spec["steps"], batch_size=spec["ppo_batch"], minibatch_size=4, micro_batch_size=4,
                        max_prompt_length=spec["prompt_length"], max_new_tokens=spec["new_tokens"], ignore_eos=True,
                        ppo_epochs=1, save_every=10_000, log_samples_every=10_000, device="cpu", **spec["overrides"])
        train_ppo(cfg)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r.get("event", "train") == "train"]
    speeds = speeds[1:] or speeds  # the first step warms up
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "tokens_per_s": round(sum(speeds) / len(speeds), 1) if speeds else None,
            "seconds": round(time.perf_counter() - t0, 1), "settings": spec["overrides"] or "defaults"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4, help="token RM pairs per step (its default)")
    ap.add_argument("--length", type=int, default=512, help="token RM tokens per sequence (its default)")
    ap.add_argument("--ppo-batch", type=int, default=8, help="PPO rollouts per step (its default)")
    ap.add_argument("--prompt-length", type=int, default=256, help="PPO prompt tokens (its default maximum)")
    ap.add_argument("--new-tokens", type=int, default=64, help="PPO tokens per rollout (its default)")
    ap.add_argument("--trainers", default="token_rm,ppo")
    ap.add_argument("--variants", default="before,after,after_bf16")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    result: dict = {"model": a.model, "steps": a.steps, "token_rm": {"batch_pairs": a.batch_size, "length": a.length},
                    "ppo": {"batch": a.ppo_batch, "prompt_length": a.prompt_length, "new_tokens": a.new_tokens}}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="finealign-trainmem-") as tmp:
        edits, prompts = _data(Path(tmp), max(16, a.batch_size * (a.steps + 1), a.ppo_batch * (a.steps + 1)),
                               a.length, a.prompt_length)
        for trainer in a.trainers.split(","):
            for variant in a.variants.split(","):
                spec = {"trainer": trainer, "model": a.model, "steps": a.steps, "batch_size": a.batch_size,
                        "length": a.length, "ppo_batch": a.ppo_batch, "prompt_length": a.prompt_length,
                        "new_tokens": a.new_tokens, "edits": str(edits), "prompts": str(prompts),
                        "out": str(Path(tmp) / f"{trainer}-{variant}"), "overrides": VARIANTS[variant]}
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                      text=True, env={**env, **ENV.get(variant, {})})
                if proc.returncode != 0:
                    raise SystemExit(f"{trainer} {variant} failed:\n{proc.stderr[-3000:]}")
                result[trainer][variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = result[trainer]
            if "before" in r and "after" in r:
                r["memory_ratio_before_over_after"] = round(r["before"]["peak_rss_mb"] / r["after"]["peak_rss_mb"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
