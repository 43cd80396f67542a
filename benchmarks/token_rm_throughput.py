"""Training throughput of finealign's token RM trainer vs TRL's RewardTrainer (sequence-level loss).

Both train the same backbone on the same minimal-edit pairs (chosen = edited, rejected = original),
as the *same token sequences* (our chat-templated, left-truncated encoding is handed to TRL
pre-tokenized as ``chosen_ids``/``rejected_ids``), one epoch over ``steps x batch`` pairs, with the
same batch size, AdamW learning rate and trainable parameters (the top ``--top-layers`` decoder
layers + final norm + the scalar head; 0 = everything). Ours uses ``seq_bt`` (sum over response
tokens); TRL's RewardTrainer its Bradley-Terry loss on the last token's score.

Measured: non-padding tokens processed per second of training loop (model loading and data
preparation excluded). Prints one JSON object with both rates and ``ratio = ours / trl``.

    python benchmarks/token_rm_throughput.py --model smollm2-135m-instruct --steps 8 --batch 4 --max-length 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch


def _pairs(args, tok):
    from finealign.models.token_rm_data import build_pair_examples, load_edit_source

    recs = load_edit_source(args.data)
    pairs, _ = build_pair_examples(recs[: args.steps * args.batch * 2], tok, args.max_length)
    return pairs[: args.steps * args.batch]


def run_ours(args, tmp: Path) -> dict:
    from finealign.train.token_rm import TokenRMConfig, train_token_rm
    from finealign.data.io import write_jsonl
    from finealign.models import load_tokenizer

    from finealign.models.token_rm_data import load_edit_source

    tok = load_tokenizer(args.model)
    pairs = _pairs(args, tok)
    by_id = {r.id: r for r in load_edit_source(args.data)[: args.steps * args.batch * 2]}
    write_jsonl(tmp / "pairs.jsonl", [by_id[p.id] for p in pairs])  # exactly the pairs TRL gets
    cfg = TokenRMConfig(data=[str(tmp / "pairs.jsonl")], out=str(tmp / "ours"), model=args.model, loss="seq_bt",
                        lora=False, top_layers=args.top_layers, steps=args.steps, batch_size=args.batch,
                        learning_rate=args.lr, lr_schedule="constant", max_length=args.max_length,
                        log_every=args.steps, save_every=0, eval_every=0, seed=args.seed)
    res = train_token_rm(cfg)
    ev = [json.loads(l) for l in (tmp / "ours" / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in ev if e["event"] == "train"][-1]
    return {"tokens": res.details["train_tokens"], "tokens_per_s": last["tokens_per_s"], "final_loss": last["loss"], "pairs": len(pairs)}


def run_trl(args, tmp: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from finealign.models import load_tokenizer, resolve_spec

    tok = load_tokenizer(args.model, padding_side="right")
    pairs = _pairs(args, tok)
    ds = Dataset.from_list([{"chosen_ids": p.edited.input_ids, "rejected_ids": p.original.input_ids} for p in pairs])
    n_tokens = sum(p.n_tokens for p in pairs)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_spec(args.model), num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    if args.top_layers:
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in list(model.model.layers)[-args.top_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        for p in list(model.model.norm.parameters()) + list(model.score.parameters()):
            p.requires_grad_(True)

    class Clock(TrainerCallback):
        t0 = t1 = None

        def on_train_begin(self, *a, **k):
            Clock.t0 = time.perf_counter()

        def on_train_end(self, *a, **k):
            Clock.t1 = time.perf_counter()

    cfg = RewardConfig(output_dir=str(tmp / "trl"), per_device_train_batch_size=args.batch, num_train_epochs=1,
                       max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant", use_cpu=True,
                       bf16=False, save_strategy="no", report_to=[], logging_steps=args.steps,
                       max_length=args.max_length, gradient_checkpointing=False, dataloader_num_workers=0,
                       seed=args.seed, disable_tqdm=True)
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    out = trainer.train()
    dt = Clock.t1 - Clock.t0
    return {"tokens": n_tokens, "tokens_per_s": n_tokens / dt, "final_loss": out.training_loss, "pairs": len(pairs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default="defacto-train")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--top-layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="token-rm-bench-") as d:
        tmp = Path(d)
        # order: TRL first, then ours (a warm file cache favours the second; model loading is not timed)
        trl_res = run_trl(args, tmp)
        ours = run_ours(args, tmp)
    if ours["tokens"] != trl_res["tokens"]:
        print(f"warning: token counts differ: ours {ours['tokens']} vs trl {trl_res['tokens']}", file=sys.stderr)
    result = {
        "benchmark": "token_rm_throughput", "model": args.model, "data": args.data, "steps": args.steps,
        "batch_pairs": args.batch, "max_length": args.max_length, "top_layers": args.top_layers,
        "threads": args.threads, "loss": {"ours": "seq_bt (sum over response tokens)", "trl": "RewardTrainer (last-token score)"},
        "ours": ours, "trl": trl_res, "ratio": ours["tokens_per_s"] / trl_res["tokens_per_s"],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
