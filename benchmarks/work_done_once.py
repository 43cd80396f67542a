"""Work done once: the quickstart with the stages' shared score caches (baseline: ``--no-share``), same commit.

A recipe's stages that score the same responses with the same scorer share one score cache
(``RUN_DIR/.score-cache/``): in ``flr-dpo`` ``label-kto`` reuses every FLR score of ``label-dpo``, and the
win-rate stages with one judge share the judge check's verdicts. This script runs
``finealign quickstart --scale SCALE --no-sim`` twice, one after the other in fresh folders: first with
``--no-share`` (every stage scores afresh: the baseline), then with sharing (the default). It prints JSON with
the wall time of each run, each stage's seconds (from its ``.finealign-stage.json`` marker), and the ratios.
Run it alone on the machine: the two runs are timed against each other.

    python benchmarks/work_done_once.py --scale tiny            # a minute; numbers mean nothing
    python benchmarks/work_done_once.py --scale default --out runs/work-done-once   # ~25 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARKER = ".finealign-stage.json"  # data.run_markers.MARKER (not imported: the script only reads files)
RECIPES = ("flr-dpo", "fine-grained-ppo")


def stage_seconds(run_dir: Path) -> dict[str, float]:
    """``{recipe/stage: seconds}`` from the stage markers of a quickstart folder."""
    out = {}
    for recipe in RECIPES:
        for marker in sorted((run_dir / recipe).glob(f"*/{MARKER}")):
            out[f"{recipe}/{marker.parent.name}"] = float(json.loads(marker.read_text())["seconds"])
    return out


def timed_quickstart(folder: Path, scale: str, share: bool) -> dict:
    """Run the quickstart into ``folder``; its wall time and stage seconds. Raises ``RuntimeError`` when it fails."""
    cmd = ["finealign", "quickstart", "--scale", scale, "--no-sim", "--quiet", "-o", str(folder)]
    cmd += [] if share else ["--no-share"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return {"command": " ".join(cmd), "wall_s": round(wall, 1), "stages_s": stage_seconds(folder)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="tiny", choices=("tiny", "default", "full"))
    ap.add_argument("--out", default=None, help="work folder (default: a fresh temporary one)")
    args = ap.parse_args(argv)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="finealign-once-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = {"baseline_no_share": timed_quickstart(work / "no-share", args.scale, share=False),
            "shared": timed_quickstart(work / "shared", args.scale, share=True)}
    base, ours = runs["baseline_no_share"], runs["shared"]
    stages = sorted(set(base["stages_s"]) | set(ours["stages_s"]))
    per_stage = {s: {"baseline_s": base["stages_s"].get(s), "shared_s": ours["stages_s"].get(s)} for s in stages}
    saved = {s: round(v["baseline_s"] - v["shared_s"], 1) for s, v in per_stage.items()
             if v["baseline_s"] is not None and v["shared_s"] is not None}
    result = {"benchmark": "work_done_once", "scale": args.scale, "work": str(work), **runs, "per_stage": per_stage,
              "saved_s_by_stage": saved, "wall_ratio_shared_over_baseline": round(ours["wall_s"] / base["wall_s"], 3),
              "wall_saved_s": round(base["wall_s"] - ours["wall_s"], 1)}
    text = json.dumps(result, indent=2)
    (work / "work_done_once.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
