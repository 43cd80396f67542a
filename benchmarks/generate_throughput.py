"""Generation throughput of the default model: new tokens/s at batch 1 and 8, fp32 and bf16.

Baseline: finealign's decoder at batch 1 in float32. Every configuration decodes the same prompts
greedily for exactly ``--max-new-tokens`` tokens (``min_new_tokens`` masks EOS), so all do the
same work. For reference, transformers' ``model.generate`` runs the same batch-8 fp32 job.
Prints one JSON object with wall-clock tokens/s and tokens per CPU-second (the latter is less
sensitive to other processes sharing the machine; the load average is reported too).

    python benchmarks/generate_throughput.py --max-new-tokens 64 --n-prompts 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def load_prompts(n: int) -> list[str]:
    from finealign.data.shared import data_root

    root = data_root(required=False)
    if root is not None and (root / "mt_bench_questions" / "question.jsonl").exists():
        lines = (root / "mt_bench_questions" / "question.jsonl").read_text().splitlines()
        return [json.loads(x)["turns"][0] for x in lines[:n]]
    from finealign.cli.quickstart import demo_prompts_path

    demo = [json.loads(x)["prompt"] for x in demo_prompts_path().read_text().splitlines()]
    return [demo[i % len(demo)] for i in range(n)]


def time_ours(model, tok, prompts, batch_size, max_new_tokens) -> None:
    from finealign.generation import generate_completions

    out = generate_completions(model, tok, prompts, temperature=0, max_new_tokens=max_new_tokens,
                               min_new_tokens=max_new_tokens, batch_size=batch_size)
    assert all(c.n_tokens == max_new_tokens for row in out for c in row)


def time_hf(model, tok, prompts, batch_size, max_new_tokens) -> None:
    from finealign.generation import render_prompt

    for i in range(0, len(prompts), batch_size):
        enc = tok([render_prompt(tok, p) for p in prompts[i:i + batch_size]], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 min_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        assert out.shape[1] - enc["input_ids"].shape[1] == max_new_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="Comma list of configs to run, e.g. ours-float32-1,ours-bfloat16-8.")
    ap.add_argument("--no-hf-reference", action="store_true", help="Skip the transformers generate() reference.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from finealign.models import load_model

    prompts = load_prompts(args.n_prompts)
    total = len(prompts) * args.max_new_tokens
    configs = [("ours", "float32", 1), ("ours", "float32", 8), ("ours", "bfloat16", 1), ("ours", "bfloat16", 8)]
    if not args.no_hf_reference:
        configs.append(("transformers.generate", "float32", 8))
    if args.only:
        keep = set(args.only.split(","))
        configs = [c for c in configs if "-".join(map(str, c)) in keep]
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = []
    loaded = {}
    for impl, dtype, bs in configs:
        if dtype not in loaded:
            loaded.clear()
            loaded[dtype] = load_model(args.model, dtype=dtype, device=args.device)
            m, t = loaded[dtype]
            time_ours(m, t, prompts[:2], 2, 4)  # warm-up
        model, tok = loaded[dtype]
        fn = time_ours if impl == "ours" else time_hf
        c0, t0 = time.process_time(), time.perf_counter()
        fn(model, tok, prompts, bs, args.max_new_tokens)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        results.append({"impl": impl, "dtype": dtype, "batch_size": bs, "seconds": round(dt, 3),
                        "cpu_seconds": round(cpu, 3), "new_tokens": total, "tokens_per_s": round(total / dt, 2),
                        "tokens_per_cpu_s": round(total / cpu, 2)})
    base, base_cpu = results[0]["tokens_per_s"], results[0]["tokens_per_cpu_s"]
    for r in results:
        r["ratio_vs_baseline"] = round(r["tokens_per_s"] / base, 3)
        r["cpu_ratio_vs_baseline"] = round(r["tokens_per_cpu_s"] / base_cpu, 3)
    dev = next(loaded[next(iter(loaded))][0].parameters()).device
    print(json.dumps({
        "benchmark": "generate_throughput", "model": args.model, "device": str(dev),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "n_prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "baseline": "ours float32 batch 1",
        "load_average_1_5_15min": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
