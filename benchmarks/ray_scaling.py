"""Throughput of the data-parallel stages on one machine: one process vs 1 and 2 local Ray workers.

Stages (each on the output of ``generate``): ``generate`` (K samples per MT-Bench prompt), ``score-flr``
and ``score-direct`` (``finealign score``), ``label`` (FLR, DPO pairs). Every stage runs three ways:
``local`` (one process, all cores), ``ray1`` (one Ray worker, all cores) and ``ray2`` (two Ray workers,
each half the cores); the three outputs must be byte-identical (``identical``). Ray is started once
(``ray_init_s``); each run's wall time ``s`` includes its workers' start (model load: ``start_s``);
``steady_per_hour`` leaves the start out. Prints one JSON object: per stage and way the seconds and
units per hour, and the speed-ups ray2 / ray1 (wall and steady) and ray2 / local (steady).

    OMP_NUM_THREADS=1 python benchmarks/ray_scaling.py --prompts 12 --k 2 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path


def load_prompts(n: int) -> list[str]:
    from finealign.data.shared import data_root

    root = data_root(required=False)
    path = root / "mt_bench_questions" / "question.jsonl" if root else None
    if path is not None and path.exists():
        return [json.loads(x)["turns"][0] for x in path.read_text().splitlines()[:n]]
    from finealign.cli.quickstart import demo_prompts_path

    demo = [json.loads(x)["prompt"] for x in demo_prompts_path().read_text().splitlines()]
    return [demo[i % len(demo)] for i in range(n)]


def run_stage(name: str, fn, work: Path, n_units: int) -> dict:
    """``fn(engine, out, on_event)`` three ways; seconds, start-up seconds, and whether outputs agree."""
    from finealign.engine.shards import EngineArgs

    res: dict = {"units": n_units}
    outs = {}
    for way, engine in (("local", EngineArgs(engine="local")), ("ray1", EngineArgs(engine="ray", workers=1)),
                        ("ray2", EngineArgs(engine="ray", workers=2))):
        out = work / f"{name}-{way}.jsonl"
        t0 = time.perf_counter()
        started: list[float] = []
        fn(engine, out, lambda k, i: started.append(time.perf_counter() - t0) if k == "workers" else None)
        wall = time.perf_counter() - t0
        start = started[0] if started else 0.0
        res[way] = {"s": round(wall, 2), "start_s": round(start, 2), "per_hour": round(n_units / wall * 3600, 1),
                    "steady_per_hour": round(n_units / max(wall - start, 1e-9) * 3600, 1)}
        outs[way] = out.read_bytes()
    res["ray2_vs_ray1"] = round(res["ray1"]["s"] / res["ray2"]["s"], 3)
    res["ray2_vs_ray1_steady"] = round(res["ray2"]["steady_per_hour"] / res["ray1"]["steady_per_hour"], 3)
    res["ray2_vs_local_steady"] = round(res["ray2"]["steady_per_hour"] / res["local"]["steady_per_hour"], 3)
    res["identical"] = len(set(outs.values())) == 1
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--stages", default="generate,score-flr,score-direct,label")
    args = ap.parse_args()

    import torch

    from finealign.engine.ray_engine import require_ray
    from finealign.engine.sharded import generate_file_sharded, label_file_sharded, score_file_sharded
    from finealign.engine.shards import EngineArgs
    from finealign.train.labeling import LabelConfig

    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)  # the one-process baseline uses every core
    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in load_prompts(args.prompts)))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    require_ray(local=True).init(address="local", num_cpus=cpus, include_dashboard=False,
                                 logging_level=logging.ERROR, log_to_driver=False)
    result = {"model": args.model, "prompts": args.prompts, "k": args.k, "max_new_tokens": args.max_new_tokens,
              "cpus": cpus, "ray_init_s": round(time.perf_counter() - t0, 2), "stages": {}}
    device = "cpu"
    gen_kw = dict(k=args.k, max_new_tokens=args.max_new_tokens, batch_size=8, device=device, seed=0)
    stages = args.stages.split(",")
    responses = work / "responses.jsonl"
    if "generate" in stages:
        result["stages"]["generate"] = run_stage(
            "generate", lambda e, o, ev: generate_file_sharded(args.model, prompts, o, engine=e, on_event=ev, **gen_kw),
            work, args.prompts * args.k)
        shutil.copy(work / "generate-local.jsonl", responses)
    else:
        generate_file_sharded(args.model, prompts, responses, engine=EngineArgs(), **gen_kw)
    n = args.prompts * args.k
    for kind in ("flr", "direct"):
        if f"score-{kind}" in stages:
            spec = f"{kind}:{args.model},device={device}"
            result["stages"][f"score-{kind}"] = run_stage(
                f"score-{kind}",
                lambda e, o, ev: score_file_sharded(spec, responses, o, chunk=8, engine=e, on_event=ev),
                work, n)
    if "label" in stages:
        spec = f"flr:{args.model},device={device}"
        result["stages"]["label"] = run_stage(
            "label", lambda e, o, ev: label_file_sharded(spec, responses, o, LabelConfig(batch_size=8), engine=e,
                                                         on_event=ev), work, n)
    result["load_avg_start_end"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
