"""Learning curve of the token RM losses over training-set size, evaluated on held-out splits.

For every (loss, size) in the grid this runs ``finealign train token-rm --limit SIZE`` (a seeded,
nested subset of the training pool, so the 50 pairs are inside the 100, ...) for the same number of
steps and batch size, then ``finealign eval-token-rm`` separately on each held-out set. Runs are
folders under ``--out``; a rerun skips finished runs and resumes an interrupted one (the trainer
resumes from its checkpoint), so the grid can be grown a piece at a time.

Prints one JSON object (also written to ``OUT/curve.json``): per run and held-out set the pairwise
accuracy (edited > original by summed token reward), token AUROC of low rewards for the changed
tokens of the original, the shorter-response baseline on the same pairs, and the number of pairs.
``--png`` draws pairwise accuracy against size, one line per loss and held-out set.

    python benchmarks/token_rm_curve.py --out runs/token_rm_curve --sizes 50 100 200 400 0 \
        --losses span_bt seq_bt --steps 80 --png docs/token_rm_curve.png

Size 0 means the whole training pool.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TRAIN = ["defacto-train", "qa-feedback-edits[:400]", "expertqa-edits"]
HELD_OUT = {"defacto-val": "defacto-val[:200]", "qa-feedback-heldout": "qa-feedback-edits[400:]"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "finealign.cli.main", *args]


def pool_size(a) -> int:
    """Usable pairs in the training pool (what ``--limit`` subsets), counted as the trainer counts them."""
    from finealign.models import load_tokenizer
    from finealign.models.token_rm_data import build_pair_examples, load_edit_sources

    pairs, _ = build_pair_examples(load_edit_sources(a.train), load_tokenizer(a.model), a.max_length)
    return len(pairs)


def run_one(a, loss: str, size: int) -> dict:
    name = f"{loss}_n{size or 'all'}_s{a.seed}"
    out = a.out / name
    done = out / "curve_eval.json"
    if done.exists():
        return json.loads(done.read_text())
    cmd = _cli("train", "token-rm", "--out", str(out), "--model", a.model, "--loss", loss,
               "--steps", str(a.steps), "--batch-size", str(a.batch), "--max-length", str(a.max_length),
               "--no-lora", "--top-layers", str(a.top_layers), "--lr", str(a.lr), "--warmup-steps", str(a.warmup),
               "--save-every", str(a.steps // 2), "--log-every", "10", "--eval-every", "0",
               "--seed", str(a.seed), "--mixed-precision", a.mixed_precision, "--quiet")
    for d in a.train:
        cmd += ["--data", d]
    if size:
        cmd += ["--limit", str(size)]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    train_s = time.time() - t0
    res: dict = {"loss": loss, "size": size or "all", "seed": a.seed, "steps": a.steps, "batch": a.batch,
                 "train_seconds": round(train_s, 1), "eval": {}}
    res["train_pairs"] = min(size, a.pool) if size else a.pool
    for key, src in a.held_out.items():
        path = out / f"eval_{key}.json"
        if not path.exists():
            subprocess.run(_cli("eval-token-rm", str(out), "--data", src, "--max-length", str(a.max_length),
                                "--mixed-precision", a.mixed_precision, "--quiet", "--out", str(path)),
                           check=True, stdout=subprocess.DEVNULL)
        m = json.loads(path.read_text())
        res["eval"][key] = {k: m.get(k) for k in ("n_pairs", "pairwise_acc", "pairwise_acc_mean", "length_acc",
                                                  "token_auroc")}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, done)
    return res


def plot(rows: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({k for r in rows for k in r["eval"]})
    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 3.2), dpi=80, squeeze=False)
    for ax, s in zip(axes[0], sets):
        for loss in sorted({r["loss"] for r in rows}):
            pts = sorted((r["train_pairs"], r["eval"][s]["pairwise_acc"])
                         for r in rows if r["loss"] == loss and s in r["eval"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=loss)
        base = [r["eval"][s]["length_acc"] for r in rows if s in r["eval"]]
        if base and base[0] is not None:
            ax.axhline(max(base[0], 1 - base[0]), color="grey", ls="--", lw=1, label="better of shorter/longer")
        ax.set_xscale("log")
        ax.set_xlabel("training pairs")
        ax.set_ylabel("held-out pairwise accuracy")
        ax.set_title(s)
        ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--losses", nargs="+", default=["span_bt", "seq_bt"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[50, 100, 200, 400, 0])
    ap.add_argument("--train", nargs="+", default=TRAIN)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--top-layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixed-precision", default="auto")
    ap.add_argument("--png", type=Path, default=None)
    a = ap.parse_args()
    a.held_out = HELD_OUT
    a.pool = pool_size(a)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = [run_one(a, loss, size) for size in a.sizes for loss in a.losses]
    out = {"model": a.model, "train": a.train, "train_pool_pairs": a.pool, "held_out": a.held_out, "runs": rows}
    (a.out / "curve.json").write_text(json.dumps(out, indent=1))
    if a.png:
        plot(rows, a.png)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
