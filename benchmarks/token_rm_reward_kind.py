"""A token classifier's reward as raw logits or as log P(fine): the same trained models scored both ways.

For every ``token_cls`` reward model of a ``finealign sim study`` folder (``OUT/rm/TASK/NOISE/sS/token_cls_nN``),
scores the task's held-out set (``sim.evaluate.evaluate_reward``: pair accuracy, its length-balanced version,
edit accuracy, token AUROC, the longer-wins baseline) once with the head's raw output as the reward
(``"logit"``, what the scorer did before the kind was recorded) and once with ``log sigmoid(head)``
(``"log_sigmoid"``, ``core.token_rm.token_rewards_from_head``), in one run, and prints JSON
``{"TASK/nN/KIND": metrics}``. The AUROC is the same both ways (the transform is monotone); the pooled
scores are not.

    finealign sim study --fast --out runs/sim_fast_idle --policies runs/policies_idle --jobs 2 --learned-seeds 0 1 2
    python benchmarks/token_rm_reward_kind.py runs/sim_fast_idle --json docs/token_rm_reward_kind.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

KEYS = ("pair_acc", "pair_acc_length_balanced", "edit_acc", "token_auroc", "length_pair_acc", "n_pairs", "n_edits")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a sim study's --out folder")
    p.add_argument("--limit", type=int, default=200, help="cap each held-out set (the study's --eval-limit)")
    p.add_argument("--json", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    from finealign.data.io import write_json
    from finealign.rewards.base import load_scorer
    from finealign.sim import make_task
    from finealign.sim.evaluate import evaluate_reward

    rms = sorted(a.study.glob("rm/*/*/s*/token_cls_n*"))
    if not rms:
        sys.exit(f"error: {a.study}: no rm/TASK/NOISE/sS/token_cls_nN folders (run the study's rm stage first)")
    out = {}
    for d in rms:
        task, size = d.parts[-4], d.name.rsplit("_", 1)[-1]
        scorer = load_scorer(f"token-rm:{d}")
        for kind in ("logit", "log_sigmoid"):
            scorer.model.spec = dataclasses.replace(scorer.model.spec, reward=kind)
            ev = evaluate_reward(scorer, make_task(task), a.study / "data" / task / "heldout", limit=a.limit)
            out[f"{task}/{size}/{kind}"] = {k: ev[k] for k in KEYS}
        scorer.close()
    print(json.dumps(out, indent=1))
    if a.json:
        write_json(a.json, out)
    return out


if __name__ == "__main__":
    main()
