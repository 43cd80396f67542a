"""PPO step throughput: finealign's trainer vs TRL's PPOTrainer as last shipped (``trl.experimental.ppo``, 1.10.x).

TRL 1.10 runs in its own virtual environment (``--trl-python``), made with

    python -m venv /tmp/trl110 && /tmp/trl110/bin/pip install torch==2.13.0 'trl==1.10.*'

Both trainers get the same setup, TRL's default architecture: full fine-tuning of the policy, a
frozen reference copy, a separate value model (same architecture), and the same sequence
classifier as reward model (the policy's weights with a seeded random score head, saved once and
loaded by both). Same prompts (MT-Bench first turns, chat template), rollouts per step, response
length (EOS suppressed so every response has exactly ``--new-tokens`` tokens), 4 PPO epochs, one
minibatch of the whole batch, 2 gradient-accumulation micro-batches, ``--threads`` torch threads, CPU.

Throughput = response tokens per step / wall time per step (steps after the first, which warms
up). Prints one JSON object with both and the ratio ours / TRL.

    python benchmarks/ppo_throughput.py --model smollm2-135m-instruct --batch 8 --new-tokens 32 --steps 6 --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

TRL_WORKER = r'''
import json, sys, time, torch
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer
tok = AutoTokenizer.from_pretrained(a["model"], padding_side="left")
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
prompts = [json.loads(l)["prompt"] for l in open(a["prompts"])]
ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                               return_dict=True)["input_ids"] for p in prompts]
ids = [i[-a["max_prompt"]:] for i in ids]
ds = Dataset.from_dict({"input_ids": ids})
policy = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32)
value = AutoModelForSequenceClassification.from_pretrained(a["model"], num_labels=1, dtype=torch.float32)
reward = AutoModelForSequenceClassification.from_pretrained(a["reward"], num_labels=1, dtype=torch.float32)
for m in (value, reward):
    m.config.pad_token_id = tok.pad_token_id
policy.generation_config.min_new_tokens = a["new_tokens"]
times = []
class T(TrainerCallback):
    def on_train_begin(self, *x, **k): times.append(time.perf_counter())
    def on_step_end(self, *x, **k): times.append(time.perf_counter())
cfg = PPOConfig(output_dir=a["out"], per_device_train_batch_size=a["batch"] // 2, gradient_accumulation_steps=2,
                num_mini_batches=1, num_ppo_epochs=a["epochs"], response_length=a["new_tokens"], stop_token=None,
                total_episodes=a["batch"] * a["steps"], learning_rate=1e-5, report_to=[], save_strategy="no",
                num_sample_generations=0, missing_eos_penalty=None, use_cpu=True, seed=0, kl_coef=0.05,
                local_rollout_forward_batch_size=a["batch"], logging_steps=1000, temperature=1.0,
                bf16=a["mixed_precision"] == "bf16")
tr = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                train_dataset=ds, value_model=value, callbacks=[T()])
tr.train()
steps = [b - a_ for a_, b in zip(times, times[1:])]
print("RESULT " + json.dumps({"step_seconds": steps}))
'''


def write_prompts(path: Path, n: int) -> None:
    from finealign.data.shared import data_root

    rows = []
    for line in (data_root() / "mt_bench_questions" / "question.jsonl").read_text().splitlines():
        q = json.loads(line)
        rows.append({"id": f"mt_bench_{q['question_id']}", "prompt": q["turns"][0]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))


def make_reward_model(model_dir: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1234)
    m = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    m.save_pretrained(out)


def seqcls_scorer(reward_dir: str, model_dir: str):
    """The benchmark's reward: the saved sequence classifier on the chat-rendered (prompt, response)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finealign.rewards.base import Scorer

    class SeqCls(Scorer):
        name = "seqcls-bench"

        def __init__(self):
            self.tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
            if self.tok.pad_token is None:
                self.tok.pad_token = self.tok.eos_token
            self.m = AutoModelForSequenceClassification.from_pretrained(reward_dir, num_labels=1).eval()
            self.m.config.pad_token_id = self.tok.pad_token_id

        @torch.no_grad()
        def score(self, prompts, responses):
            texts = [self.tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                                  tokenize=False) for p, r in zip(prompts, responses)]
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            return self.m(**enc).logits[:, 0].tolist()

    return SeqCls()


def run_ours(a, model_dir: str, reward_dir: str, prompts: Path, work: Path) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    from finealign.train.ppo import train_ppo
    from finealign.train.ppo_config import PPOConfig

    cfg = PPOConfig(policy=model_dir, reward="length", prompts=str(prompts), out=str(work / "ours"), steps=a.steps,
                    batch_size=a.batch, minibatch_size=a.batch, micro_batch_size=a.batch // 2, ppo_epochs=a.epochs,
                    max_new_tokens=a.new_tokens, max_prompt_length=a.max_prompt, ignore_eos=True, lora=False,
                    value_model="separate", granularity="sequence", learning_rate=1e-5, device="cpu", save_every=10**6,
                    log_samples_every=10**6, mixed_precision=a.mixed_precision)
    train_ppo(cfg, scorer=seqcls_scorer(reward_dir, model_dir))
    rows = [json.loads(x) for x in (work / "ours" / "metrics.jsonl").read_text().splitlines()]
    phases = ("seconds_generate", "seconds_reward", "seconds_ref_value", "seconds_update")
    return {"step_seconds": [r["seconds"] for r in rows], "response_length": [r["response_length"] for r in rows],
            "phase_seconds": {p[8:]: [r[p] for r in rows] for p in phases}}


def run_trl(a, model_dir: str, reward_dir: str, prompts: Path, work: Path) -> dict:
    args = {"model": model_dir, "reward": reward_dir, "prompts": str(prompts), "out": str(work / "trl"),
            "batch": a.batch, "steps": a.steps, "epochs": a.epochs, "new_tokens": a.new_tokens,
            "max_prompt": a.max_prompt, "threads": a.threads, "mixed_precision": a.mixed_precision}
    p = subprocess.run([a.trl_python, "-c", TRL_WORKER, json.dumps(args)], capture_output=True, text=True,
                       env={"TRL_EXPERIMENTAL_SILENCE": "1", "PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(a.threads)})
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (p.stderr or p.stdout)[-2000:], "returncode": p.returncode}


def summarise(r: dict, batch: int, new_tokens: int) -> dict:
    if "error" in r:
        return r
    timed = r["step_seconds"][1:] or r["step_seconds"]
    sec = sum(timed) / len(timed)
    return {**r, "seconds_per_step": round(sec, 3), "tokens_per_s": round(batch * new_tokens / sec, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--max-prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="PPO steps per trainer; the first is warm-up")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each trainer")
    ap.add_argument("--trl-python", default="/tmp/trl110/bin/python")
    ap.add_argument("--only", choices=["ours", "trl"], default=None)
    ap.add_argument("--mixed-precision", choices=["no", "bf16"], default="no",
                    help="bf16: autocast in both (ours: mixed_precision=bf16; TRL: bf16=True)")
    a = ap.parse_args()
    from finealign.models import resolve_spec

    model_dir = resolve_spec(a.model)
    work = Path(tempfile.mkdtemp(prefix="ppo-bench-"))
    prompts = work / "prompts.jsonl"
    write_prompts(prompts, 80)
    reward_dir = work / "reward"
    make_reward_model(model_dir, reward_dir)
    trl_version = subprocess.run([a.trl_python, "-c", "import trl; print(trl.__version__)"], capture_output=True,
                                 text=True).stdout.strip()
    res = {"model": a.model, "batch": a.batch, "new_tokens": a.new_tokens, "max_prompt": a.max_prompt,
           "steps": a.steps, "ppo_epochs": a.epochs, "threads": a.threads, "mixed_precision": a.mixed_precision,
           "trl_version": trl_version}
    t0 = time.perf_counter()
    if a.only != "trl":
        res["ours"] = summarise(run_ours(a, model_dir, str(reward_dir), prompts, work), a.batch, a.new_tokens)
    if a.only != "ours":
        res["trl"] = summarise(run_trl(a, model_dir, str(reward_dir), prompts, work), a.batch, a.new_tokens)
    if "tokens_per_s" in res.get("ours", {}) and "tokens_per_s" in res.get("trl", {}):
        res["ratio_ours_over_trl"] = round(res["ours"]["tokens_per_s"] / res["trl"]["tokens_per_s"], 3)
    res["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    sys.exit(main())
