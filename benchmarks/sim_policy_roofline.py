"""A small task policy's PPO-step phases against their roofline on this machine.

For a policy folder made by ``finealign sim policy`` (or ``--tiny`` to make a tiny one first), times the
phases of one PPO step the way ``train ppo`` runs them, on the model directly (not through the trainer):

* ``sample``: ``--rollouts`` responses of exactly ``--new-tokens`` tokens (EOS suppressed) with
  ``model.generate`` (key/value cache, temperature 1), the prompts being the task's own;
* ``score``: the task's gold scorer on the decoded responses (Python only: no FLOPs, no roofline);
* ``reference``: one forward pass over prompt + response without gradients (reference log-probs; a
  shared-head critic's values come from the same pass);
* ``update``: ``--epochs`` x (forward + backward + AdamW step) over the whole batch.

FLOPs: 2 per multiply-add of every ``nn.Linear`` (the output head on response positions only) plus attention
(4 x layers x width x context per token); a backward pass is counted as twice its forward. The roofline time
of a phase is its FLOPs / the measured FLOP/s of a ``--matmul`` x ``--matmul`` float32 matrix product on the
same threads; the ratio measured / roofline says how far the phase is from the machine's limit (the target
of issue 26 is within 4x). Prints one JSON object.

``--trainer`` runs ``finealign train ppo`` itself instead (RLOO, 4 responses per prompt, full fine-tuning with
a frozen reference copy, the gold reward ``sim:TASK``) and compares the trainer's own phase times
(``seconds_generate``, ``seconds_reward``, ``seconds_ref_value``, ``seconds_update`` of ``metrics.jsonl``)
with the roofline of each phase at the measured mean response length (the reference/values phase counted
as one forward pass: the least it must do).

    OMP_NUM_THREADS=1 python benchmarks/sim_policy_roofline.py --policy runs/pol/constraints --threads 1
    OMP_NUM_THREADS=1 python benchmarks/sim_policy_roofline.py --policy runs/pol/constraints --threads 1 --trainer
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch


def matmul_flops(n: int, threads: int, repeats: int = 5) -> float:
    """Measured float32 FLOP/s of an n x n matrix product (the best of ``repeats``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def linear_macs(model, head_name: str = "lm_head") -> tuple[int, int]:
    """(multiply-adds per token of every ``nn.Linear`` but the output head, those of the head)."""
    body = head = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            macs = m.in_features * m.out_features
            head, body = (head + macs, body) if name.endswith(head_name) else (head, body + macs)
    return body, head


def forward_flops(model, rows: int, prompt: int, response: int) -> float:
    """FLOPs of one forward pass over ``rows`` x (prompt + response) tokens, the head on response positions."""
    body, head = linear_macs(model)
    c = model.config
    T = prompt + response
    attn = 4 * c.num_hidden_layers * c.hidden_size * T * (T + 1) / 2  # QK^T and AV, causal
    return rows * (2 * body * T + 2 * head * response + attn)


def sample_flops(model, rows: int, prompt: int, response: int) -> float:
    """FLOPs of generating ``response`` tokens per row with a key/value cache (prefill, then one token a step)."""
    body, head = linear_macs(model)
    c = model.config
    prefill = 2 * body * prompt + 2 * head + 4 * c.num_hidden_layers * c.hidden_size * prompt * (prompt + 1) / 2
    per_layer = 4 * c.num_hidden_layers * c.hidden_size
    steps = sum(2 * body + 2 * head + per_layer * (prompt + t) for t in range(1, response))
    return rows * (prefill + steps)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(args) -> dict:
    from finealign.models import load_model
    from finealign.sim import make_task
    from finealign.sim.policy import policy_record
    from finealign.data.chat import render_prompt

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rec = policy_record(args.policy)
    if rec is None:
        raise SystemExit(f"{args.policy}: not a `finealign sim policy` folder")
    task = make_task(rec["task"], rec["config"].get("task_options") or None)
    model, tok = load_model(args.policy, device="cpu")
    insts = task.sample(random.Random(1), args.rollouts)
    enc = tok([render_prompt(tok, i.prompt) for i in insts], return_tensors="pt", padding=True,
              add_special_tokens=False)
    P, N, B = enc["input_ids"].shape[1], args.new_tokens, args.rollouts

    def sample():
        with torch.no_grad():
            return model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=N,
                                  min_new_tokens=N, pad_token_id=tok.pad_token_id)

    t_sample, full = timed(sample, args.repeats)
    texts = tok.batch_decode(full[:, P:], skip_special_tokens=True)
    t_score, _ = timed(lambda: [task.judge(i, t) for i, t in zip(insts, texts)], args.repeats)
    mask = torch.cat([enc["attention_mask"], torch.ones(B, N, dtype=torch.long)], dim=1)

    def reference():
        with torch.no_grad():
            return model(input_ids=full, attention_mask=mask, logits_to_keep=N + 1).logits

    t_ref, _ = timed(reference, args.repeats)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    adv = torch.randn(B, N)

    def update():
        model.train()
        for _ in range(args.epochs):
            logits = model(input_ids=full, attention_mask=mask, logits_to_keep=N + 1).logits[:, :-1]
            lp = torch.log_softmax(logits.float(), -1).gather(-1, full[:, P:].unsqueeze(-1)).squeeze(-1)
            (-(lp * adv).mean()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()

    t_upd, _ = timed(update, args.repeats)
    peak = matmul_flops(args.matmul, args.threads)
    fwd = forward_flops(model, B, P, N)
    flops = {"sample": sample_flops(model, B, P, N), "score": None, "reference": fwd, "update": 3 * fwd * args.epochs}
    seconds = {"sample": t_sample, "score": t_score, "reference": t_ref, "update": t_upd}
    phases = {}
    for k, s in seconds.items():
        f = flops[k]
        phases[k] = {"seconds": round(s, 4), "gflop": None if f is None else round(f / 1e9, 3),
                     "gflop_per_s": None if f is None else round(f / s / 1e9, 2),
                     "roofline_seconds": None if f is None else round(f / peak, 4),
                     "ratio": None if f is None else round(s / (f / peak), 2)}
    total_f = sum(f for f in flops.values() if f is not None)
    step = sum(seconds.values())
    return {"policy": str(args.policy), "task": rec["task"], "params": sum(p.numel() for p in model.parameters()),
            "threads": args.threads, "rollouts": B, "prompt_tokens": P, "new_tokens": N, "epochs": args.epochs,
            "matmul": {"n": args.matmul, "gflop_per_s": round(peak / 1e9, 2)}, "phases": phases,
            "step": {"seconds": round(step, 3), "roofline_seconds": round(total_f / peak, 4),
                     "ratio": round(step / (total_f / peak), 2), "seconds_per_rollout": round(step / B, 4)}}


def run_trainer(args) -> dict:
    """``finealign train ppo`` on the policy for ``--trainer-steps`` steps; its own phase times (metrics.jsonl,
    the median over the steps after the first) against the roofline of each phase at the measured lengths."""
    import os
    import subprocess
    import sys

    from finealign.data.chat import render_prompt
    from finealign.data.io import write_jsonl
    from finealign.models import load_model
    from finealign.sim import make_task
    from finealign.sim.make import prompt_records
    from finealign.sim.policy import policy_record

    rec = policy_record(args.policy)
    task = make_task(rec["task"], rec["config"].get("task_options") or None)
    model, tok = load_model(args.policy, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        insts = task.sample(random.Random(2), max(8, args.rollouts // 4 * 2))
        write_jsonl(Path(tmp) / "prompts.jsonl", prompt_records(insts, f"{task.name}-"))
        cmd = [sys.executable, "-m", "finealign.cli.main", "train", "ppo", "--policy", args.policy,
               "--reward", f"sim:{task.name}", "--prompts", str(Path(tmp) / "prompts.jsonl"),
               "--steps", str(args.trainer_steps), "--batch-size", str(args.rollouts), "--rollouts-per-prompt", "4",
               "--advantage", "rloo", "--ppo-epochs", str(args.epochs), "--minibatch-size", str(args.rollouts),
               "--micro-batch-size", str(args.rollouts), "--max-new-tokens", str(args.new_tokens), "--device", "cpu",
               "--mixed-precision", "no", "--no-lora", "--out", str(Path(tmp) / "ppo"), "-q"]
        subprocess.run(cmd, check=True, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        rows = [json.loads(x) for x in (Path(tmp) / "ppo" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rows = rows[1:] or rows  # the first step warms up
    P = round(statistics.mean(len(tok(render_prompt(tok, i.prompt), add_special_tokens=False)["input_ids"])
                              for i in insts))
    N = max(1, round(statistics.mean(r["response_length"] for r in rows)))
    B = args.rollouts
    peak = matmul_flops(args.matmul, args.threads)
    fwd = forward_flops(model, B, P, N)
    flops = {"generate": sample_flops(model, B, P, N), "reward": None, "ref_value": fwd,
             "update": 3 * fwd * args.epochs}
    phases = {}
    for k, f in flops.items():
        s = statistics.median(r[f"seconds_{k}"] for r in rows)
        phases[k] = {"seconds": round(s, 4), "roofline_seconds": None if f is None else round(f / peak, 4),
                     "ratio": None if f is None else round(s / (f / peak), 2)}
    step = statistics.median(r["seconds"] for r in rows)
    total = sum(f for f in flops.values() if f is not None)
    return {"policy": str(args.policy), "task": rec["task"], "threads": args.threads, "rollouts": B,
            "prompt_tokens": P, "mean_response_tokens": N, "epochs": args.epochs, "steps_timed": len(rows),
            "matmul": {"n": args.matmul, "gflop_per_s": round(peak / 1e9, 2)}, "phases": phases,
            "step": {"seconds": round(step, 3), "roofline_seconds": round(total / peak, 4),
                     "ratio": round(step / (total / peak), 2)}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", help="A `finealign sim policy` folder.")
    ap.add_argument("--tiny", metavar="TASK", help="Make a tiny policy for TASK in a temporary folder and use it.")
    ap.add_argument("--rollouts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--matmul", type=int, default=512, help="Size of the square product that sets the roofline.")
    ap.add_argument("--trainer", action="store_true",
                    help="Time `finealign train ppo` itself (its per-phase seconds), not the phases on the model.")
    ap.add_argument("--trainer-steps", type=int, default=4, help="PPO steps of --trainer (the first is not timed).")
    args = ap.parse_args(argv)
    if not args.policy and not args.tiny:
        ap.error("give --policy DIR or --tiny TASK")
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from finealign.sim.policy import SimPolicyConfig
            from finealign.train.sim_policy import train_task_policy

            args.policy = str(Path(tmp) / "policy")
            train_task_policy(SimPolicyConfig(task=args.tiny, size="tiny", out=args.policy))
        result = run_trainer(args) if args.trainer else run(args)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
