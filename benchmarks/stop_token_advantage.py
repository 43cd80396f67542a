"""Where does credit go at the stop token? The issue-24 measurement, re-made for every advantage estimator.

Reads a ``finealign sim make`` folder (k samples per prompt, each with ``meta.finish_reason``), scores the
samples with the task's gold reward as PPO does (``train.ppo_rollout.score_rewards``: token granularity, the
stop unit on the policy's stop token), builds each estimator's advantages (``train.ppo.advantages_of``) at
KL 0 and whitens them over the batch as the trainer does, then prints JSON: per estimator, the stop token's
mean advantage and the share of positive ones over the groups whose answers all scored the same (where
stopping should get no credit) and over all responses; plus the mean advantage of every token in those
groups. Sequence level (everything on the stop token) is the reference; ``token rloo, old placement``
re-creates the placement before the token-reward contract (each mention's reward on its own last token,
the missing items' on the last *text* token, the stop token 0) for comparison in the same run.

    finealign sim make arithmetic --n 16 --heldout 0 --k 4 --max-new-tokens 24 --temperature 1.0 --top-p 1.0 \\
        --out runs/stop_adv -q
    python benchmarks/stop_token_advantage.py runs/stop_adv --json docs/stop_token_advantage.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch


def load_groups(folder: Path, k: int) -> list[list[dict]]:
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for line in (folder / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        by_prompt[json.dumps(rec["prompt"])].append(rec)
    return [v[:k] for v in by_prompt.values() if len(v) >= k]


def old_placement(scorer, prompts, ro, tok) -> torch.Tensor:
    """The rewards as placed before the contract: every mention on its own span's last token, the missing
    items' zero-width mention on the last text token, nothing on the stop token."""
    from finealign.core.token_map import decode_offsets, map_token_rewards

    out = torch.zeros(ro.response_mask.shape)
    for i, (p, text, ids) in enumerate(zip(prompts, ro.texts, ro.response_ids)):
        j = scorer.task.judge_prompt(p, text)
        _, offs = decode_offsets(ids, lambda x: tok.decode(x, skip_special_tokens=True))
        mapped = map_token_rewards([(m.start, m.end) for m in j.mentions], [m.reward for m in j.mentions], offs)
        out[i, :len(mapped)] = torch.tensor(mapped) if mapped else 0.0
        if not mapped:
            out[i, 0] = j.score
    return out


def main(argv=None) -> dict:
    from finealign.core.ppo import masked_whiten
    from finealign.models import load_model
    from finealign.rewards.base import load_scorer
    from finealign.train.ppo import advantages_of
    from finealign.train.ppo_config import PPOConfig
    from finealign.train.ppo_rollout import Rollout, score_rewards

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a finealign sim make output folder")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--k", type=int, default=4, help="samples per prompt (a group)")
    ap.add_argument("--policy", default="smollm2-135m-instruct", help="the tokenizer the samples came from")
    ap.add_argument("--json", type=Path, help="also write the result here")
    a = ap.parse_args(argv)
    groups = load_groups(a.folder, a.k)
    recs = [r for g in groups for r in g]
    _, tok = load_model(a.policy, device="cpu")
    ids = [tok(r["completion"], add_special_tokens=False)["input_ids"] for r in recs]
    stopped = [r.get("meta", {}).get("finish_reason") != "length" for r in recs]
    T = max(len(x) + 1 for x in ids)
    mask = torch.tensor([[1.0] * (len(x) + s) + [0.0] * (T - len(x) - s) for x, s in zip(ids, stopped)])
    ro = Rollout(None, None, mask, 0, [r["completion"] for r in recs], ids, None, None)
    scorer = load_scorer(f"sim:{a.task}")
    prompts = [r["prompt"] for r in recs]
    B = len(recs)
    last = (mask.sum(1) - 1).long()
    scores = [float(s) for s in scorer.score(prompts, ro.texts)]
    tied = torch.tensor([len({round(scores[i], 6) for i in range(g * a.k, g * a.k + a.k)}) == 1
                         for g in range(len(groups)) for _ in range(a.k)])
    out = {"folder": str(a.folder), "task": a.task, "responses": B, "groups": len(groups),
           "tied_groups": int(tied.sum()) // a.k, "stopped": sum(stopped), "estimators": {}}
    runs = [("sequence", "rloo"), ("token", "rloo"), ("token", "prime"), ("token", "reinforce++"),
            ("sequence", "reinforce++"), ("old", "rloo")]
    for gran, est in runs:
        r = old_placement(scorer, prompts, ro, tok) if gran == "old" else score_rewards(scorer, prompts, ro, tok, gran)[0]
        cfg = PPOConfig(prompts="-", out="-", advantage=est, rollouts_per_prompt=a.k, batch_size=B, minibatch_size=B,
                        micro_batch_size=B)
        adv = masked_whiten(advantages_of(cfg, r, torch.zeros_like(r), mask).advantages, mask)
        stop_adv = adv[torch.arange(B), last]
        rows = tied & torch.tensor(stopped)
        tied_tokens = mask.bool() & tied[:, None]
        out["estimators"]["token rloo, old placement" if gran == "old" else f"{gran} {est}"] = {
            "stop_mean_tied": round(float(stop_adv[rows].mean()), 4) if rows.any() else None,
            "stop_positive_tied": round(float((stop_adv[rows] > 0).float().mean()), 4) if rows.any() else None,
            "token_mean_tied": round(float(adv[tied_tokens].mean()), 4) if tied_tokens.any() else None,
            "stop_mean_all": round(float(stop_adv[torch.tensor(stopped)].mean()), 4),
        }
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
