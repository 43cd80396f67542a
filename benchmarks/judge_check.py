"""Which offline judge beats chance? Each judge's own pairwise accuracy (both orders, bootstrap 95% CI)
on labelled pairs, next to the "longer response wins" baseline, as ``finealign eval winrate`` measures it.

Prints one JSON line per judge as it finishes, then a markdown table. Verdicts are cached in
``--cache-dir`` (one file per judge), so a killed run resumes.

    OMP_NUM_THREADS=1 python benchmarks/judge_check.py --benchmark hh-harmless --limit 100 \\
        --judge pairwise:smollm2-135m-instruct --judge direct:smollm2-135m-instruct \\
        --judge flr:smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path


def main() -> None:
    from finealign.eval.judges import VerdictCache, load_judge
    from finealign.eval.winrate_run import check_judge

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", action="append", required=True, help="judge spec (repeat)")
    ap.add_argument("--benchmark", default="alpaca-eval", help="alpaca-eval | hh-harmless | a pair FILE")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--max-chars", type=int, default=None, help="cut responses before judging")
    ap.add_argument("--preference", default="hard", choices=["hard", "soft"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default="judge-check-cache")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    rows = []
    for spec in args.judge:
        tag = hashlib.sha1(f"{spec}|{args.benchmark}|{args.max_chars}".encode()).hexdigest()[:10]
        cache = VerdictCache(Path(args.cache_dir) / f"{tag}.jsonl")
        judge = load_judge(spec, device=args.device)
        t0 = time.perf_counter()
        try:
            chk, _ = check_judge(judge, args.benchmark, judge_id=spec, limit=args.limit, data_dir=args.data_dir,
                                 max_chars=args.max_chars, preference=args.preference, cache=cache)
        finally:
            cache.close()
            judge.close()
        row = {"judge": spec, "benchmark": chk.benchmark, "n": chk.n, "accuracy": chk.accuracy,
               "ci": [chk.ci_low, chk.ci_high], "length_accuracy": chk.length_accuracy,
               "length_ci": [chk.length_ci_low, chk.length_ci_high],
               "position_disagreement": chk.position_disagreement, "beats_chance": chk.evidence,
               "verdict_paths": chk.paths,
               "max_chars": args.max_chars, "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| judge | pairs | accuracy [95% CI] | longer wins [95% CI] | order disagreement | beats chance |")
    print("|---|---:|---|---|---:|---|")
    for r in rows:
        dis = "n/a" if r["position_disagreement"] is None else f"{100 * r['position_disagreement']:.0f}%"
        print(f"| `{r['judge']}` | {r['n']} | {r['accuracy']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] | "
              f"{r['length_accuracy']:.3f} [{r['length_ci'][0]:.3f}, {r['length_ci'][1]:.3f}] | {dis} | "
              f"{'yes' if r['beats_chance'] else 'no'} |")


if __name__ == "__main__":
    main()
