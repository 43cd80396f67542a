"""Train a token-level reward model on minimal-edit pairs (thin, accelerate-based).

``train_token_rm(TokenRMConfig(...))`` reads top to bottom:

1. build the model (LoRA, full, or the top layers only) and load and align the pairs
   (``models.token_rm_data``; skipped pairs are counted and reported);
2. the optimizer and the learning-rate schedule (``run_state.make_scheduler``);
3. resume from ``OUT/checkpoint`` when it exists (``run_state``: trainable weights, optimizer, scheduler,
   RNG states, step, the open logging window; the data order is a pure function of (seed, step), so
   the resumed run sees exactly the batches the uninterrupted one would), then ``prepare`` with
   accelerate (so ``accelerate launch`` gives DDP/FSDP);
4. loop: batch -> per-token rewards -> loss (``core.token_rm``) -> step; log every ``log_every``
   steps, evaluate every ``eval_every``, checkpoint every ``save_every``;
5. save the final model in Hugging Face format to ``OUT`` and its last evaluation to ``OUT/eval.json``.

Metrics go to ``OUT/metrics.jsonl`` (one JSON object per log/eval event) and to TensorBoard / W&B
through accelerate's trackers (``report_to``). A resumed run writes the same ``metrics.jsonl`` as an
uninterrupted one, whatever ``save_every`` and ``log_every`` are.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from pathlib import Path
from typing import Callable, Collection, NamedTuple

import torch

from ..core.token_rm import anchored_span_bt_loss, seq_bt_loss, span_bt_loss, token_cls_loss, token_cls_targets
from ..data.identity import check_verb, resumable_fields
from ..errors import FinealignError
from ..rewards.inputs import input_fingerprints
from ..models.token_rm_data import PairBatch, build_pair_examples, collate_pairs, load_edit_sources
from . import run_state
from .accel import adamw, make_accelerator
from .run_state import MetricsLog, TrainResult
from .token_rm_config import TokenRMConfig

__all__ = ["TokenRMConfig", "batch_indices", "compute_loss", "load_checkpoint_model", "train_token_rm"]


class Window(NamedTuple):
    """The training steps since the last log event: summed loss, steps, tokens (checkpointed, so a
    resumed run logs the same averages)."""

    loss: float = 0.0
    n: int = 0
    tokens: int = 0


# ----------------------------------------------------------------------------------------------


def compute_loss(loss: str, rewards: torch.Tensor, batch: PairBatch, anchor_weight: float = 0.1) -> torch.Tensor:
    """The configured loss of ``rewards`` (2B, T) for ``batch`` (edited rows first)."""
    n = batch.n_pairs
    r_w, r_l = rewards[:n], rewards[n:]
    if loss == "span_bt":
        return anchored_span_bt_loss(r_w, batch.changed[:n], batch.response[:n], r_l, batch.changed[n:],
                                     batch.response[n:], anchor_weight).loss
    if loss == "span_bt_pure":
        return span_bt_loss(r_w, batch.changed[:n], r_l, batch.changed[n:]).loss
    if loss == "seq_bt":
        return seq_bt_loss(r_w, batch.response[:n], r_l, batch.response[n:]).loss
    tw, mw, tl, ml = token_cls_targets(batch.changed[:n], batch.changed[n:], batch.response[n:])
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


def _checkpoint_activations(cfg: TokenRMConfig, config, device: str) -> bool:
    """``cfg.gradient_checkpointing``, or with auto (None) whether a batch of edit pairs' activations (two
    sequences of ``max_length`` per pair) would not fit (``memory.use_activation_checkpointing``)."""
    from .memory import activation_bytes, use_activation_checkpointing

    need = activation_bytes(2 * cfg.batch_size, cfg.max_length, config.num_hidden_layers, config.hidden_size,
                            config.num_attention_heads, dtype_bytes=2 if cfg.dtype in ("bfloat16", "float16") else 4)
    return use_activation_checkpointing(cfg.gradient_checkpointing, need, device)


def _fresh_model(cfg: TokenRMConfig, device: str):
    """A fresh token RM of ``cfg`` on ``device`` (``models.token_rm.new_token_rm``), its reward kind that of
    ``cfg.loss`` (``core.token_rm.reward_kind_of_loss``)."""
    from ..core.token_rm import reward_kind_of_loss
    from ..models.loading import LoraOptions
    from ..models.token_rm import new_token_rm

    return new_token_rm(cfg.model, mode="lora" if cfg.lora else "full", top_layers=cfg.top_layers,
                        lora=LoraOptions(r=cfg.lora_r, alpha=cfg.lora_alpha), dtype=cfg.dtype, device=device,
                        seed=cfg.seed, reward=reward_kind_of_loss(cfg.loss))


def _build(cfg: TokenRMConfig, acc, log: Callable[[str], None]):
    """The fresh model and tokenizer, the training and held-out examples, the build counts."""
    torch.manual_seed(cfg.seed)
    model, tok = _fresh_model(cfg, str(acc.device))
    if _checkpoint_activations(cfg, model.lm.config, str(acc.device)):
        from ..models.compat import enable_activation_checkpointing
        from .memory import release_freed_memory

        enable_activation_checkpointing(model.lm)
        release_freed_memory()  # freed per-layer activations go back to the OS (train/memory.py)
    train_pairs, bstats = build_pair_examples(load_edit_sources(cfg.data), tok, cfg.max_length,
                                              skip_non_minimal=not cfg.include_non_minimal)
    log(f"train: {bstats.summary()}")
    if bstats.not_minimal and acc.is_main_process:
        names = ", ".join(bstats.not_minimal_names[:5]) + (" ..." if bstats.not_minimal > 5 else "")
        warnings.warn(f"{', '.join(cfg.data)}: {bstats.not_minimal} edit(s) failed the minimality guard and were left "
                      f"out of training: {names} (--include-non-minimal trains on them)", stacklevel=2)
    if cfg.limit is not None and cfg.limit < len(train_pairs):
        train_pairs = _subset(train_pairs, cfg.limit, cfg.seed)
        log(f"train: --limit {cfg.limit}: training on a seeded subset of {len(train_pairs)} usable pairs")
    if len(train_pairs) < cfg.batch_size * acc.num_processes:
        raise FinealignError(f"{', '.join(cfg.data)}: only {len(train_pairs)} usable pairs, fewer than one batch "
                             f"({cfg.batch_size} x {acc.num_processes} processes)")
    eval_pairs = []
    if cfg.eval_data:
        recs = load_edit_sources(cfg.eval_data)
        eval_pairs, estats = build_pair_examples(recs[:cfg.eval_limit] if cfg.eval_limit else recs, tok, cfg.max_length)
        log(f"eval: {estats.summary()}")
    return model, tok, train_pairs, eval_pairs, bstats


def _resume(out: Path, acc, fp: dict, model, opt, sched, log) -> tuple[int, int, Window]:
    """(step, train tokens, open log window) of ``OUT/checkpoint``, loaded into the objects; zeros without one."""
    if acc.is_main_process:
        run_state.recover_checkpoint(out)
    acc.wait_for_everyone()
    ck = run_state.load_checkpoint(out, fp)
    if ck is None:
        return 0, 0, Window()
    run_state.restore(ck, model, opt, sched, out / run_state.CHECKPOINT)
    log(f"resuming from {out / run_state.CHECKPOINT} at step {ck.step}")
    return ck.step, int(ck.extra.get("train_tokens", 0)), Window(**ck.extra.get("window", {}))


def _train_step(cfg: TokenRMConfig, acc, pmodel, opt, sched, params, pairs, pad_id: int, step: int):
    """One optimizer step on the global batch of ``step``; returns (loss, tokens in the global batch)."""
    idx = batch_indices(len(pairs), cfg.batch_size * acc.num_processes, cfg.seed, step)
    batch = collate_pairs([pairs[i] for i in idx[acc.process_index::acc.num_processes]], pad_id)
    batch = PairBatch(*(t.to(acc.device) if torch.is_tensor(t) else t for t in batch))
    rewards = pmodel(batch.input_ids, batch.attention_mask)  # (2B, T)
    loss = compute_loss(cfg.loss, rewards, batch, cfg.anchor_weight)
    acc.backward(loss)
    if cfg.max_grad_norm:
        acc.clip_grad_norm_(params, cfg.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach()), int(batch.attention_mask.sum()) * acc.num_processes


def train_token_rm(cfg: TokenRMConfig, *, on_step: Callable[[int, int, dict], None] | None = None,
                   log: Callable[[str], None] = lambda m: None,
                   probe: Callable[[int, object, object], None] | None = None,
                   probe_steps: Collection[int] = ()) -> TrainResult:
    """Run (or resume) the training described by ``cfg``; see the module docstring.

    ``on_step(step, total, last_train_event)`` is called after every step (progress); ``log`` gets messages;
    ``probe(step, model, tokenizer)`` after each step in ``probe_steps`` (main process, before the step's
    checkpoint, eval mode, no gradients: ``finealign sim study --rm-curve``). Returns a ``TrainResult`` whose
    ``metrics`` is the final evaluation (None without held-out data or before the last step) and whose
    ``details`` holds ``build`` (pair counts), ``train_tokens``, ``trained_pairs`` and ``seconds``. Raises
    ``FinealignError`` for unusable data or an output folder holding another run."""
    from ..eval.token_rm_eval import evaluate_token_rm

    out = Path(cfg.out)
    inputs = input_fingerprints(cfg)  # a model that cannot load fails here, before the folder is made
    out.mkdir(parents=True, exist_ok=True)
    settings = cfg.run_settings()  # the first release's names and field set: older runs still resume
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise FinealignError("--device cuda: no CUDA device is available")
    acc = make_accelerator(mixed_precision=cfg.mixed_precision, cpu=cfg.device == "cpu",
                           **run_state.tracker_kwargs(cfg.report_to, out))
    main = acc.is_main_process
    check_verb(out, "train token-rm", inputs=inputs, claim=main)  # another verb, other inputs
    # 1. model and data
    model, tok, train_pairs, eval_pairs, bstats = _build(cfg, acc, log)
    # 2. optimizer, learning-rate schedule
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = run_state.make_scheduler(opt, schedule=cfg.lr_schedule, warmup_steps=cfg.warmup_steps,
                                     total_steps=cfg.steps)
    # 3. resume
    fp = run_state.fingerprint(settings, resumable_fields(TokenRMConfig))  # the fields marked on TokenRMConfig
    step, train_tokens, window = _resume(out, acc, fp, model, opt, sched, log)
    # the scheduler stays outside ``prepare``: accelerate would step it once per process, so with N
    # processes the schedule would run N times too fast (the rate hit 0 halfway with 2 processes)
    pmodel, opt = acc.prepare(model, opt)
    if main:
        from ..data.io import write_json

        write_json(out / "train_config.json", settings)
    mlog = MetricsLog(out, step, acc=acc, project="finealign-token-rm", config=settings, main=main)

    def evaluate(at: int) -> dict | None:
        if not eval_pairs or not main:
            return None
        ev = evaluate_token_rm(acc.unwrap_model(pmodel), eval_pairs, tok.pad_token_id, batch_size=cfg.eval_batch_size)
        mlog.append({"event": "eval", "step": at, **{f"eval/{k}": v for k, v in ev.to_dict().items()}})
        log(f"step {at}: eval pairwise acc {ev.pairwise_acc:.3f} (length baseline {ev.length_acc:.3f}), "
            f"token AUROC {ev.token_auroc:.3f}")
        return ev.to_dict()

    # 4. loop
    pmodel.train()
    t0 = t_window = time.perf_counter()
    run_steps, event = 0, {}
    try:
        while step < cfg.steps and (cfg.stop_after is None or run_steps < cfg.stop_after):
            loss, ntok = _train_step(cfg, acc, pmodel, opt, sched, params, train_pairs, tok.pad_token_id, step)
            step, run_steps, train_tokens = step + 1, run_steps + 1, train_tokens + ntok
            window = Window(window.loss + loss, window.n + 1, window.tokens + ntok)
            if step % cfg.log_every == 0 or step == cfg.steps:
                event = _train_event(step, window, t_window, sched, train_tokens)
                mlog.append(event)
                window, t_window = Window(), time.perf_counter()
            if on_step is not None:
                on_step(step, cfg.steps, event)
            if probe is not None and step in probe_steps and main:
                _probe(probe, step, acc.unwrap_model(pmodel), tok)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                evaluate(step)
            if main and ((cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps):
                run_state.save_checkpoint(out, step=step, trainable=run_state.trainable_tensors(acc.unwrap_model(pmodel)),
                                          optimizer=opt, scheduler=sched, fingerprint=fp,
                                          extra={"train_tokens": train_tokens, "window": window._asdict()})
            acc.wait_for_everyone()
        # 5. final model and evaluation
        finished = step >= cfg.steps
        final_eval = _finish(cfg, out, acc, pmodel, tok, bstats, step, run_steps, evaluate) if finished and main else None
    finally:
        mlog.close()
    return TrainResult(out, step, finished, final_eval or {}, details={
        "build": bstats._asdict(), "train_tokens": train_tokens, "trained_pairs": len(train_pairs),
        "seconds": time.perf_counter() - t0})


def _train_event(step: int, window: Window, t_window: float, sched, train_tokens: int) -> dict:
    """The logged training event of the window ending at ``step`` (mean loss, learning rate, tokens / s)."""
    dt = time.perf_counter() - t_window
    return {"event": "train", "step": step, "loss": window.loss / window.n, "lr": sched.get_last_lr()[0],
            "tokens_per_s": window.tokens / dt if dt > 0 else 0.0, "train_tokens": train_tokens}


def _probe(probe, step: int, model, tok) -> None:
    """``probe(step, model, tok)`` with the model in eval mode and no gradients; training mode is restored."""
    model.eval()
    try:
        with torch.no_grad():
            probe(step, model, tok)
    finally:
        model.train()


def _finish(cfg, out: Path, acc, pmodel, tok, bstats, step: int, run_steps: int, evaluate) -> dict | None:
    """The final evaluation and model (a rerun of a finished run reads the evaluation back)."""
    if run_steps == 0 and (out / "eval.json").exists():
        return json.loads((out / "eval.json").read_text()).get("eval")
    from ..data.io import write_json

    final_eval = evaluate(step)
    acc.unwrap_model(pmodel).save(out, tok)
    write_json(out / "eval.json", {"step": step, "eval": final_eval, "train_build": bstats._asdict(),
                                   "config": cfg.run_settings()})
    return final_eval


def load_checkpoint_model(out: str | Path):
    """The model of a run's ``OUT/checkpoint`` (before or without a final save): ``(model, tokenizer, step)``.

    Rebuilds the fresh model from ``OUT/train_config.json`` and loads the checkpoint's trainable
    weights, so a running or interrupted training can be evaluated at its last checkpoint.
    """
    out = Path(out)
    ck = run_state.latest_checkpoint(out)
    if ck is None or not (out / "train_config.json").is_file():
        raise FinealignError(f"{out}: no checkpoint/ with train_config.json (not a token-rm training folder)")
    raw = json.loads((out / "train_config.json").read_text())
    cfg = TokenRMConfig.from_run_settings(raw)
    model, tok = _fresh_model(cfg, "cpu")
    model.load_trainable_state(torch.load(ck / "trainable.pt", map_location="cpu"))
    model.eval()
    step = int(json.loads((ck / "trainer_state.json").read_text())["step"])
    return model, tok, step
