"""bf16 autocast vs float32 for one token-RM training step on this CPU (why the study's autocast is ``auto``).

Trains the same LoRA token RM (``span_bt``, batch 8 edit pairs, one thread) for ``--steps`` steps twice, in one
process: float32 (``--mixed-precision no``) first, then bf16 autocast. Measured: the training tokens per second
of every step after the first (model loading, the first step and the final save excluded). Prints one JSON object
with both rates, ``ratio = float32 / bf16`` (> 1: bf16 is slower), the CPU's flags that matter
(``amx_bf16``, ``avx512_bf16``) and what ``--mixed-precision auto`` resolves to here.

    python benchmarks/autocast_cpu.py --data runs/rm135_default24/data/constraints/edits.jsonl --steps 3

The edits are any ``sim make`` (or ``finealign edit``) output; the default model is the built-in 135M one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def rate(data: str, model: str, mixed_precision: str, steps: int, out: Path) -> dict:
    """Tokens per second of steps 2..steps of one training with ``mixed_precision``."""
    from finealign.train.token_rm import train_token_rm
    from finealign.train.token_rm_config import TokenRMConfig

    stamps = []
    cfg = TokenRMConfig(data=[data], out=str(out), model=model, loss="span_bt", lora=True, steps=steps, batch_size=8,
                        learning_rate=5e-4, mixed_precision=mixed_precision, eval_every=0, save_every=0, log_every=1,
                        seed=0, max_length=256)
    train_token_rm(cfg, on_step=lambda step, total, event: stamps.append((time.perf_counter(), event)))
    per_step = [e["train_tokens"] - p["train_tokens"] for (_, p), (_, e) in zip(stamps, stamps[1:])]
    seconds = [b - a for (a, _), (b, _) in zip(stamps, stamps[1:])]
    return {"tokens_per_s": sum(per_step) / sum(seconds), "seconds_per_step": statistics.fmean(seconds),
            "steps_timed": len(seconds)}


def main() -> None:
    from finealign.config import cpu_flags, resolve_mixed_precision

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="Edit pairs (JSONL) to train on.")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=3, help="Steps per training (the first is not timed).")
    a = ap.parse_args()
    if a.steps < 2:
        ap.error("--steps must be at least 2 (the first step is not timed)")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = rate(a.data, a.model, "no", a.steps, Path(tmp) / "no")
        bf16 = rate(a.data, a.model, "bf16", a.steps, Path(tmp) / "bf16")
    flags = cpu_flags()
    print(json.dumps({"model": a.model, "threads": 1, "float32": fp32, "bf16": bf16,
                      "ratio": fp32["tokens_per_s"] / bf16["tokens_per_s"],
                      "cpu_flags": {f: f in flags for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2")},
                      "auto_resolves_to": resolve_mixed_precision("auto", "cpu")}, indent=1))


if __name__ == "__main__":
    main()
