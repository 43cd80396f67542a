"""Train a token-level reward model on minimal-edit pairs (thin, accelerate-based).

``train_token_rm(TokenRMConfig(...))`` reads top to bottom:

1. load and align the pairs (``token_rm_data``; skipped pairs are counted and reported);
2. build the model (LoRA, full, or the top layers only) and the optimizer/scheduler, ``prepare`` them
   with accelerate (so ``accelerate launch`` gives DDP/FSDP);
3. resume from ``OUT/checkpoint`` when it exists (trainable weights, optimizer, scheduler, RNG
   states, step; the data order is a pure function of (seed, step), so the resumed run sees exactly
   the batches the uninterrupted one would);
4. loop: batch -> per-token rewards -> loss (``core.token_rm``) -> step; log every ``log_every``
   steps, evaluate every ``eval_every``, checkpoint every ``save_every``;
5. save the final model in Hugging Face format to ``OUT`` and its last evaluation to ``OUT/eval.json``.

Metrics go to ``OUT/metrics.jsonl`` (one JSON object per log/eval event) and to TensorBoard / W&B
through accelerate's trackers (``report_to``).
"""

from __future__ import annotations

from .accel import adamw, make_accelerator

import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.token_rm import LOSSES, seq_bt_loss, span_bt_loss, token_cls_loss, token_cls_targets
from ..errors import FinealignError
from .token_rm_data import PairBatch, build_pair_examples, collate_pairs, load_edit_sources

REPORT_TO = ("tensorboard", "wandb")
SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TokenRMConfig:
    """Everything one token RM training run needs; saved as ``OUT/train_config.json``."""

    data: list[str] = field(default_factory=list)  # edit files or data set names, optionally [a:b]-sliced
    out: str = ""  # output folder: the model, checkpoint/, metrics.jsonl, eval.json
    model: str = "smollm2-135m-instruct"  # backbone spec
    loss: str = "span_bt"  # span_bt | seq_bt | token_cls
    eval_data: list[str] = field(default_factory=list)  # held-out edit pairs
    limit: int | None = None  # train on N usable pairs: the first N of a seeded shuffle (nested subsets)
    eval_limit: int | None = None  # evaluate on the first N held-out pairs
    # model
    lora: bool = True  # LoRA adapters (False: full fine-tuning)
    top_layers: int = 0  # train only the top N decoder layers (+ final norm, or their LoRA); 0 = all
    lora_r: int = 16
    lora_alpha: int = 32
    dtype: str = "float32"  # weights' dtype
    mixed_precision: str = "no"  # no | bf16 | fp16: accelerate autocast for the forward/backward (bf16 is ~4x faster on recent CPUs)
    # optimisation
    max_steps: int = 100
    batch_size: int = 4  # pairs per step per process
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "linear"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    max_length: int = 512  # tokens per sequence; longer prompts lose their oldest context
    # run
    seed: int = 0
    eval_every: int = 50  # steps; 0 = only at the end
    eval_batch_size: int = 8
    save_every: int = 50  # steps between checkpoints; 0 = only at the end
    log_every: int = 10
    report_to: list[str] = field(default_factory=list)
    stop_after: int | None = None  # stop (as if interrupted) after this many steps in this call; rerun resumes

    def __post_init__(self):
        def bad(name, problem):
            raise FinealignError(f"token-rm config: {name}: {problem}")

        if isinstance(self.data, str):
            self.data = [self.data]
        if isinstance(self.eval_data, str):
            self.eval_data = [self.eval_data]
        if isinstance(self.report_to, str):
            self.report_to = [s for s in self.report_to.split(",") if s and s != "none"]
        if not self.data:
            bad("data", "no training data given")
        if not self.out:
            bad("out", "no output folder given")
        if self.loss not in LOSSES:
            bad("loss", f"expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.lr_schedule not in SCHEDULES:
            bad("lr_schedule", f"expected one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        for name in ("max_steps", "batch_size", "max_length", "eval_batch_size", "log_every", "lora_r", "lora_alpha"):
            if getattr(self, name) <= 0:
                bad(name, f"must be positive, got {getattr(self, name)}")
        for name in ("eval_every", "save_every", "warmup_steps", "top_layers"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("limit", "eval_limit", "stop_after"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                bad(name, f"must be positive, got {v}")
        if not self.learning_rate > 0:
            bad("learning_rate", f"must be positive, got {self.learning_rate}")
        if self.max_length < 16:
            bad("max_length", f"must be at least 16, got {self.max_length}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            bad("mixed_precision", f"expected no, bf16 or fp16, got {self.mixed_precision!r}")
        for r in self.report_to:
            if r not in REPORT_TO:
                bad("report_to", f"expected tensorboard and/or wandb, got {r!r}")

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "TokenRMConfig":
        """Fields from a YAML file, then ``overrides`` (values that are None are ignored)."""
        import yaml

        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise FinealignError(f"{p}: cannot read the YAML config: {e}") from e
        if not isinstance(raw, dict):
            raise FinealignError(f"{p}: expected a mapping of config fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise FinealignError(f"{p}: unknown field(s) {', '.join(unknown)}")
        return cls(**{**raw, **{k: v for k, v in overrides.items() if v is not None}})

    def fingerprint(self) -> dict:
        """The fields a resumed run must share with the interrupted one."""
        skip = {"out", "eval_every", "save_every", "log_every", "report_to", "stop_after", "eval_batch_size"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class TrainResult:
    out: Path
    step: int
    finished: bool
    build: dict
    final_eval: dict | None
    train_tokens: int
    seconds: float
    trained_pairs: int = 0  # pairs trained on (after --limit)


# ----------------------------------------------------------------------------------------------


def compute_loss(loss: str, rewards: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """The configured loss of ``rewards`` (2B, T) for ``batch`` (edited rows first)."""
    n = batch.n_pairs
    r_w, r_l = rewards[:n], rewards[n:]
    if loss == "span_bt":
        return span_bt_loss(r_w, batch.changed[:n], r_l, batch.changed[n:]).loss
    if loss == "seq_bt":
        return seq_bt_loss(r_w, batch.response[:n], r_l, batch.response[n:]).loss
    tw, mw, tl, ml = token_cls_targets(batch.changed[:n], batch.changed[n:])
    return token_cls_loss(rewards, torch.cat([tw, tl]), torch.cat([mw, ml]))


def batch_indices(n_examples: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The example indices of global step ``step`` (0-based): a pure function of (seed, step).

    Each epoch is a fresh permutation seeded by ``seed + epoch``; the last partial batch of an
    epoch is dropped (so every step sees ``batch_size`` pairs).
    """
    per_epoch = max(1, n_examples // batch_size)
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n_examples, generator=g).tolist()
    return perm[k * batch_size:(k + 1) * batch_size]


def _subset(records: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(records):
        return records
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    return [records[i] for i in sorted(order[:limit])]


def _scheduler(opt, cfg: TokenRMConfig):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        if cfg.lr_schedule == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(out: Path, model, opt, sched, step: int, train_tokens: int, cfg: TokenRMConfig) -> Path:
    """Write ``OUT/checkpoint`` atomically (a temp folder, then rename)."""
    tmp = out / f".checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(model.trainable_state(), tmp / "trainable.pt")
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state()}, tmp / "state.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "train_tokens": train_tokens,
                                                        "config": cfg.fingerprint()}, indent=2))
    final = out / "checkpoint"
    old = out / ".checkpoint-old"
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
    return final


def _load_checkpoint(out: Path, model, opt, sched, cfg: TokenRMConfig) -> tuple[int, int]:
    ck = out / "checkpoint"
    if not (ck / "trainer_state.json").exists():
        old = out / ".checkpoint-old"  # killed between the two renames
        if (old / "trainer_state.json").exists():
            os.replace(old, ck)
        else:
            return 0, 0
    st = json.loads((ck / "trainer_state.json").read_text())
    if st["config"] != json.loads(json.dumps(cfg.fingerprint())):
        diff = sorted(k for k in cfg.fingerprint() if st["config"].get(k) != json.loads(json.dumps(cfg.fingerprint()))[k])
        raise FinealignError(f"{out}: holds a checkpoint of a different run (differs in {', '.join(diff)}); "
                             "use another --out or delete the folder")
    model.load_trainable_state(torch.load(ck / "trainable.pt", map_location="cpu"))
    state = torch.load(ck / "state.pt", map_location="cpu", weights_only=False)
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(st["step"]), int(st.get("train_tokens", 0))


def _metrics_log(out: Path, keep_until: int):
    """Open ``OUT/metrics.jsonl`` for appending, dropping events after step ``keep_until`` (a resumed run redoes them)."""
    path = out / "metrics.jsonl"
    if path.exists():
        from ..data.io import write_jsonl

        kept = []
        for line in path.read_text().splitlines():
            try:
                o = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run
            if o.get("step", 0) <= keep_until:
                kept.append(o)
        write_jsonl(path, kept)
    return open(path, "a", encoding="utf-8")


def train_token_rm(cfg: TokenRMConfig, *, console=None, show_progress: bool = True) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring."""

    from ..eval.token_rm_eval import evaluate_token_rm
    from ..models.loading import LoraOptions
    from ..models.token_rm import new_token_rm

    log = (lambda m: console.print(m)) if console is not None else (lambda m: None)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    acc = make_accelerator(log_with=cfg.report_to or None, project_dir=str(out), mixed_precision=cfg.mixed_precision)
    main = acc.is_main_process

    # 1. data
    torch.manual_seed(cfg.seed)
    model, tok = new_token_rm(cfg.model, mode="lora" if cfg.lora else "full", top_layers=cfg.top_layers,
                              lora=LoraOptions(r=cfg.lora_r, alpha=cfg.lora_alpha), dtype=cfg.dtype,
                              device=str(acc.device), seed=cfg.seed)
    train_pairs, bstats = build_pair_examples(load_edit_sources(cfg.data), tok, cfg.max_length)
    log(f"train: {bstats.summary()}")
    if cfg.limit is not None and cfg.limit < len(train_pairs):
        train_pairs = _subset(train_pairs, cfg.limit, cfg.seed)
        log(f"train: --limit {cfg.limit}: training on a seeded subset of {len(train_pairs)} usable pairs")
    if len(train_pairs) < cfg.batch_size * acc.num_processes:
        raise FinealignError(f"{', '.join(cfg.data)}: only {len(train_pairs)} usable pairs, fewer than one batch "
                             f"({cfg.batch_size} x {acc.num_processes} processes)")
    eval_pairs = []
    if cfg.eval_data:
        eval_recs = load_edit_sources(cfg.eval_data)
        eval_pairs, estats = build_pair_examples(eval_recs[:cfg.eval_limit] if cfg.eval_limit else eval_recs, tok, cfg.max_length)
        log(f"eval: {estats.summary()}")

    # 2. optimizer, scheduler, accelerate
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = _scheduler(opt, cfg)

    # 3. resume
    step, train_tokens = _load_checkpoint(out, model, opt, sched, cfg)
    if step:
        log(f"resuming from {out / 'checkpoint'} at step {step}")
    pmodel, opt, sched = acc.prepare(model, opt, sched)
    if main:
        from ..data.io import write_json

        write_json(out / "train_config.json", dataclasses.asdict(cfg))
        mlog = _metrics_log(out, step)
    if cfg.report_to:
        acc.init_trackers("finealign-token-rm", config={k: str(v) for k, v in dataclasses.asdict(cfg).items()})

    def emit(event: dict):
        if main:
            mlog.write(json.dumps(event) + "\n")
            mlog.flush()
        if cfg.report_to:
            acc.log({k: v for k, v in event.items() if isinstance(v, (int, float)) and v is not None}, step=event["step"])

    def evaluate(at: int) -> dict | None:
        if not eval_pairs or not main:
            return None
        ev = evaluate_token_rm(acc.unwrap_model(pmodel), eval_pairs, tok.pad_token_id, batch_size=cfg.eval_batch_size)
        d = {"event": "eval", "step": at, **{f"eval/{k}": v for k, v in ev.to_dict().items()}}
        emit(d)
        log(f"step {at}: eval pairwise acc {ev.pairwise_acc:.3f} (length baseline {ev.length_acc:.3f}), "
            f"token AUROC {ev.token_auroc:.3f}")
        return ev.to_dict()

    # 4. loop
    from ..cli.common import progress

    pmodel.train()
    t0 = time.perf_counter()
    run_steps = 0
    final_eval = None
    window = {"loss": 0.0, "n": 0, "tokens": 0, "t": time.perf_counter()}
    with progress(disable=not (show_progress and main)) as bar:
        task = bar.add_task(f"token-rm {cfg.loss}", total=cfg.max_steps, completed=step, info="")
        while step < cfg.max_steps:
            if cfg.stop_after is not None and run_steps >= cfg.stop_after:
                break
            idx = batch_indices(len(train_pairs), cfg.batch_size * acc.num_processes, cfg.seed, step)
            mine = idx[acc.process_index::acc.num_processes]
            batch = collate_pairs([train_pairs[i] for i in mine], tok.pad_token_id)
            batch = PairBatch(*(t.to(acc.device) if torch.is_tensor(t) else t for t in batch))
            rewards = pmodel(batch.input_ids, batch.attention_mask)  # (2B, T)
            loss = compute_loss(cfg.loss, rewards, batch)
            acc.backward(loss)
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            run_steps += 1
            ntok = int(batch.attention_mask.sum()) * acc.num_processes
            train_tokens += ntok
            window["loss"] += float(loss.detach())
            window["n"] += 1
            window["tokens"] += ntok
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                dt = time.perf_counter() - window["t"]
                tps = window["tokens"] / dt if dt > 0 else 0.0
                emit({"event": "train", "step": step, "loss": window["loss"] / window["n"],
                      "lr": sched.get_last_lr()[0], "tokens_per_s": tps, "train_tokens": train_tokens})
                bar.update(task, info=f"loss {window['loss'] / window['n']:.4f}  {tps:,.0f} tok/s")
                window = {"loss": 0.0, "n": 0, "tokens": 0, "t": time.perf_counter()}
            bar.update(task, completed=step)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
                evaluate(step)
            if main and ((cfg.save_every and step % cfg.save_every == 0) or step == cfg.max_steps):
                save_checkpoint(out, acc.unwrap_model(pmodel), opt, sched, step, train_tokens, cfg)
            acc.wait_for_everyone()

    # 5. final model and evaluation
    finished = step >= cfg.max_steps
    if finished and main:
        if run_steps == 0 and (out / "eval.json").exists():
            final_eval = json.loads((out / "eval.json").read_text()).get("eval")
        else:
            final_eval = evaluate(step)
            acc.unwrap_model(pmodel).save(out, tok)
            from ..data.io import write_json

            write_json(out / "eval.json", {"step": step, "eval": final_eval, "train_build": bstats._asdict(),
                                           "config": dataclasses.asdict(cfg)})
    if main:
        mlog.close()
    if cfg.report_to:
        acc.end_training()
    return TrainResult(out, step, finished, bstats._asdict(), final_eval, train_tokens, time.perf_counter() - t0,
                       len(train_pairs))


def load_checkpoint_model(out: str | Path):
    """The model of a run's ``OUT/checkpoint`` (before or without a final save): ``(model, tokenizer, step)``.

    Rebuilds the fresh model from ``OUT/train_config.json`` and loads the checkpoint's trainable
    weights, so a running or interrupted training can be evaluated at its last checkpoint.
    """
    from ..models.loading import LoraOptions
    from ..models.token_rm import new_token_rm

    out = Path(out)
    ck = out / "checkpoint"
    if not (ck / "trainer_state.json").is_file() or not (out / "train_config.json").is_file():
        raise FinealignError(f"{out}: no checkpoint/ with train_config.json (not a token-rm training folder)")
    raw = json.loads((out / "train_config.json").read_text())
    cfg = TokenRMConfig(**{k: v for k, v in raw.items() if k in {f.name for f in dataclasses.fields(TokenRMConfig)}})
    model, tok = new_token_rm(cfg.model, mode="lora" if cfg.lora else "full", top_layers=cfg.top_layers,
                              lora=LoraOptions(r=cfg.lora_r, alpha=cfg.lora_alpha), dtype=cfg.dtype, seed=cfg.seed)
    model.load_trainable_state(torch.load(ck / "trainable.pt", map_location="cpu"))
    model.eval()
    step = int(json.loads((ck / "trainer_state.json").read_text())["step"])
    return model, tok, step
