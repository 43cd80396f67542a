"""FLR throughput: the reference strategy vs finealign's packed prefix-tree scorer, same model and inputs.

Reference strategy (the FLR paper's code): one full forward pass per (response, follow-up), batch
size 1, full logits. Ours: each context encoded once, all follow-ups in one packed prefix-tree
pass over its KV cache, ``--batch-size`` responses at a time. Both score the same token ids with
the same follow-up set (the paper's 120 by default); the JSON reports responses/s of both, the
ratio and the largest absolute difference of the scores.

Inputs: the first N AlpacaEval prompts with gpt4_1106_preview's outputs cut at ``--max-chars``.
The reference strategy is slow (120 forward passes of ~430 tokens per response), so it may run on
the first ``--n-ref`` of them; the ratio compares responses/s measured on each side (wall clock,
and process CPU time, which is steadier on a shared machine).

    python benchmarks/flr_throughput.py --n 20 --n-ref 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=20, help="responses scored by ours")
    ap.add_argument("--n-ref", type=int, default=None, help="responses scored by the reference strategy (default: --n)")
    ap.add_argument("--max-chars", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dims", default=None, help="a subset of dimensions, e.g. relevance+correctness")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from finealign.data.shared import data_root
    from finealign.models import load_model
    from finealign.rewards.flr import FLRConfig, FLRScorer

    rows = json.loads((data_root() / "alpaca_eval_v2_gpt4turbo_annotations" / "model_outputs" /
                       "gpt4_1106_preview.json").read_text())[: args.n]
    prompts = [r["instruction"] for r in rows]
    responses = [r["output"][: args.max_chars] for r in rows]
    n_ref = min(args.n_ref or args.n, args.n)

    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    dims = tuple(args.dims.split("+")) if args.dims else None
    ours = FLRScorer(FLRConfig(model=args.model, batch_size=args.batch_size, dtype=args.dtype, dims=dims), model, tok)
    ref = FLRScorer(FLRConfig(model=args.model, strategy="naive", dtype=args.dtype, dims=dims), model, tok)
    ours.followup_values(["Hi"], ["Hello!"])  # warm-up: builds the follow-up plan, first kernels
    ref.followup_values(["Hi"], ["Hello!"])

    def timed(scorer, p, r):
        t0, c0 = time.perf_counter(), time.process_time()
        v = scorer.followup_values(p, r)
        return v, time.perf_counter() - t0, time.process_time() - c0

    v_ours, t_ours, c_ours = timed(ours, prompts, responses)
    v_ref, t_ref, c_ref = timed(ref, prompts[:n_ref], responses[:n_ref])

    from finealign.core.flr import aggregate_followups

    def flr(s, v):
        return aggregate_followups(v.double(), s._dim_index, s._positive, len(s.followups.dims)).total

    ctx_tokens = [len(ours._plan_for(ours._context(p, r))[0]) for p, r in zip(prompts, responses)]
    ours_rps, ref_rps = args.n / t_ours, n_ref / t_ref
    out = {
        "benchmark": "flr_throughput",
        "model": args.model, "dtype": args.dtype, "device": args.device, "threads": args.threads,
        "followups": len(ours.followups), "inputs": f"first {args.n} AlpacaEval prompts, gpt4_1106_preview outputs cut at {args.max_chars} chars",
        "mean_context_tokens": round(sum(ctx_tokens) / len(ctx_tokens), 1),
        "tree_nodes": int(next(iter(ours._plans.values())).tree.tokens.shape[0]),
        "followup_tokens": sum(len(s) for s in next(iter(ours._plans.values())).segments),
        "reference": {"strategy": "one full forward pass per follow-up, batch 1", "responses": n_ref,
                      "seconds": round(t_ref, 2), "cpu_seconds": round(c_ref, 2), "responses_per_s": round(ref_rps, 4),
                      "forward_passes": n_ref * len(ours.followups)},
        "ours": {"strategy": "context once + one packed prefix-tree pass", "responses": args.n, "batch_size": args.batch_size,
                 "seconds": round(t_ours, 2), "cpu_seconds": round(c_ours, 2), "responses_per_s": round(ours_rps, 4)},
        "speedup": round(ours_rps / ref_rps, 2),
        "speedup_cpu_time": round((c_ref / n_ref) / (c_ours / args.n), 2),
        "max_abs_diff_flr": float((flr(ours, v_ours[:n_ref]) - flr(ref, v_ref)).abs().max()),
        "max_abs_diff_followup_loglik": float((v_ours[:n_ref] - v_ref).abs().max()),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
