"""Fine-grained PPO: a thin trainer over ``core.ppo``; runs alone or under ``accelerate launch`` (DDP).

One step, in order:
  1. rollout: sample one response per prompt with the policy
  2. rewards: the scorer's r_t on the policy's tokens (per token, or the sum on the last token)
  3. reference log-probs: LoRA adapters off (or a separate reference model)
  4. old log-probs and values: the actor-critic before the update
  5. advantages: R_t = alpha * r_t - beta * kl_t, GAE, whitening
  6. K epochs over shuffled minibatches, gradient accumulation over micro-batches, clipped
     policy and value losses, max grad norm, LR schedule
  7. KL controller update, metrics, samples, checkpoint

Every step reseeds from (seed, step, rank), and the checkpoint holds the trainable weights, the
optimizer, the scheduler, the KL coefficient, the counters and the RNG states, so a resumed run
computes the same numbers as an uninterrupted one.
"""

from __future__ import annotations

from .accel import adamw, make_accelerator

import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..core.ppo import assemble_rewards, gae, masked_mean, masked_whiten, policy_loss, update_kl_coef, value_loss
from ..data.io import JsonlAppender, write_json, write_text_atomic
from ..errors import FinealignError
from .ppo_config import PPOConfig, dump_yaml
from .ppo_rollout import ActorCritic, encode_prompts, length_sorted_chunks, reference_logprobs, sample, score_rewards

# fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"out", "steps", "save_every", "log_samples_every", "report_to", "device"}


@dataclass
class Counters:
    """Robustness counters, saved in checkpoints and reported in metrics."""

    skipped_batches: int = 0  # non-finite rewards
    skipped_updates: int = 0  # non-finite loss or gradient
    empty_responses: int = 0
    truncated_prompts: int = 0


@dataclass
class RunResult:
    out: Path
    steps_done: int
    last: dict = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 9_176 + rank * 101) % (2**31 - 1)


def _seed_all(s: int) -> None:
    random.seed(s)
    torch.manual_seed(s)
    try:
        import numpy as np

        np.random.seed(s % (2**32))
    except ImportError:  # pragma: no cover
        pass


def _lr_lambda(cfg: PPOConfig, total: int) -> Callable[[int], float]:
    def f(i: int) -> float:
        if i < cfg.warmup_steps:
            return (i + 1) / (cfg.warmup_steps + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        frac = min(1.0, (i - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return 1.0 - frac if cfg.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))

    return f


class _Reporters:
    """TensorBoard / W&B sinks for scalar metrics (main process only)."""

    def __init__(self, cfg: PPOConfig, out: Path):
        self.sinks = []
        for r in cfg.report_to:
            if r == "tensorboard":
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as e:
                    raise FinealignError("report_to tensorboard needs the tensorboard package (pip install tensorboard)") from e
                w = SummaryWriter(str(out / "tb"))
                self.sinks.append((lambda m, s, w=w: [w.add_scalar(f"ppo/{k}", v, s) for k, v in m.items()
                                                       if isinstance(v, (int, float))], w.close))
            elif r == "wandb":
                try:
                    import wandb
                except ImportError as e:
                    raise FinealignError("report_to wandb needs the wandb package (pip install wandb)") from e
                run = wandb.init(project="finealign-ppo", config=cfg.to_dict(), dir=str(out), resume="allow")
                self.sinks.append((lambda m, s, run=run: run.log(m, step=s), run.finish))

    def log(self, metrics: dict, step: int) -> None:
        for fn, _ in self.sinks:
            fn(metrics, step)

    def close(self) -> None:
        for _, close in self.sinks:
            close()


def _load_models(cfg: PPOConfig, device: str):
    from ..models import LoraOptions, load_model

    lora = LoraOptions(r=cfg.lora_r, alpha=cfg.lora_alpha) if cfg.lora else None
    policy, tok = load_model(cfg.policy, dtype=cfg.dtype, device=device, lora=lora, padding_side="left")
    ref = None
    if cfg.reference is not None or not cfg.lora:
        ref, _ = load_model(cfg.reference or cfg.policy, dtype=cfg.dtype, device=device)
        ref.requires_grad_(False)
    critic = None
    if cfg.value_model == "separate":
        critic, _ = load_model(cfg.policy, dtype=cfg.dtype, device=device, lora=lora)
        head, emb = critic.get_output_embeddings(), critic.get_input_embeddings()
        if head is not None and head.weight is not emb.weight:
            head.requires_grad_(False)  # the critic reads hidden states only (and DDP wants no unused weights)
    hidden = policy.config.hidden_size
    return ActorCritic(policy, hidden, critic).to(device), tok, ref


def _checkpoint_dir(out: Path) -> Path:
    return out / "checkpoint"


def _save_checkpoint(out: Path, ac: ActorCritic, opt, sched, state: dict) -> None:
    ck = _checkpoint_dir(out)
    tmp = out / ".checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().cpu().clone() for n, p in ac.named_parameters() if p.requires_grad}
    torch.save({"trainable": trainable, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}, **state}, tmp / "state.pt")
    old = out / ".checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if ck.exists():
        os.replace(ck, old)
    os.replace(tmp, ck)
    shutil.rmtree(old, ignore_errors=True)


def _check_resumable(saved: dict, cfg: PPOConfig, out: Path) -> None:
    now = cfg.to_dict()
    defaults = PPOConfig.__dataclass_fields__
    diff = [k for k in now if k not in RESUMABLE_CHANGES
            and saved.get(k, getattr(defaults[k], "default", None)) != now[k]]
    if diff:
        raise FinealignError(f"{out}: holds a run with another configuration ({', '.join(diff)} differ); "
                             f"use a new --out or the same settings to resume")


def _rewrite_metrics(path: Path, upto: int) -> None:
    """Drop log lines of steps after the checkpoint (a run killed between log and checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= upto:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            break
    write_text_atomic(path, "".join(k + "\n" for k in keep))


def train_ppo(cfg: PPOConfig, scorer=None, on_step: Callable[[int, int, dict], None] | None = None,
              log: Callable[[str], None] = lambda m: None) -> RunResult:
    """Run (or resume) PPO as ``cfg`` says; returns where the outputs are and the last metrics."""

    from ..generation import read_prompts, render_prompt, stop_token_ids
    from ..rewards.base import TokenScorer, load_scorer

    out = Path(cfg.out)
    acc = make_accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    rank, world, main = acc.process_index, acc.num_processes, acc.is_main_process
    items = read_prompts(cfg.prompts)
    if len(items) < cfg.batch_size * world:
        raise FinealignError(f"{cfg.prompts}: {len(items)} prompts, fewer than batch_size x processes "
                             f"= {cfg.batch_size * world}")
    _seed_all(cfg.seed)
    ac, tok, ref = _load_models(cfg, str(acc.device))
    scorer = load_scorer(scorer or cfg.reward)
    if cfg.granularity == "token" and not isinstance(scorer, TokenScorer) and main:
        warnings.warn(f"reward {getattr(scorer, 'name', cfg.reward)!r} is not a token scorer: its score lands on the last token "
                      "(same as --granularity sequence)", stacklevel=2)
    stops = stop_token_ids(ac.policy, tok)
    texts = [render_prompt(tok, it.prompt) for it in items]

    params = [p for p in ac.parameters() if p.requires_grad]
    opt = adamw(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    n_opt = cfg.steps * cfg.ppo_epochs * (cfg.batch_size // cfg.minibatch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, n_opt))
    start, kl_coef, counters = 0, cfg.kl_coef, Counters()

    ck = _checkpoint_dir(out) / "state.pt"
    if ck.exists():
        state = torch.load(ck, map_location="cpu", weights_only=False)
        _check_resumable(state["config"], cfg, out)
        missing = set(n for n, p in ac.named_parameters() if p.requires_grad) - set(state["trainable"])
        if missing:
            raise FinealignError(f"{ck}: checkpoint lacks {len(missing)} trainable tensors (e.g. {sorted(missing)[0]})")
        ac.load_state_dict(state["trainable"], strict=False)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, kl_coef, counters = state["step"], state["kl_coef"], Counters(**state["counters"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        log(f"resuming {out} from step {start}")
    model, opt = acc.prepare(ac, opt)
    unwrapped = acc.unwrap_model(model)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", dump_yaml(cfg))
        _rewrite_metrics(out / "metrics.jsonl", start)
        _rewrite_metrics(out / "samples.jsonl", start)
    metrics_f = JsonlAppender(out / "metrics.jsonl", key=lambda o: o["step"]) if main else None
    samples_f = JsonlAppender(out / "samples.jsonl", key=lambda o: (o["step"], o["i"])) if main else None
    reporters = _Reporters(cfg, out) if main else None
    last: dict = {}
    per_epoch = len(items) // (cfg.batch_size * world)
    try:
        for step in range(start, cfg.steps):
            t0 = time.perf_counter()
            _seed_all(_step_seed(cfg.seed, step, rank))
            # 1. rollout
            epoch, slot = divmod(step, per_epoch)
            order = torch.randperm(len(items), generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch)).tolist()
            first = slot * cfg.batch_size * world + rank * cfg.batch_size
            idx = order[first: first + cfg.batch_size]
            prompts = [items[i].prompt for i in idx]
            q_ids, q_mask, cut = encode_prompts(tok, [texts[i] for i in idx], cfg.max_prompt_length)
            unwrapped.eval()
            with acc.autocast():
                ro = sample(unwrapped.policy, tok, q_ids.to(acc.device), q_mask.to(acc.device),
                            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, stop_ids=stops,
                            min_new_tokens=cfg.max_new_tokens if cfg.ignore_eos else 0,
                            with_logprobs=cfg.old_logprobs == "generation")
            empty = sum(not t.strip() for t in ro.texts)
            t_gen = time.perf_counter()
            # 2. rewards from the scorer, on the policy's tokens
            with acc.autocast():
                r_score, totals = score_rewards(scorer, prompts, ro, tok, cfg.granularity)
            mask = ro.response_mask.to(acc.device)
            r_score = r_score.to(acc.device)
            bad = torch.tensor([float(not torch.isfinite(r_score).all())], device=acc.device)
            if acc.reduce(bad, "sum").item() > 0:
                counters.skipped_batches += 1
                counters.truncated_prompts += cut
                if main:
                    warnings.warn(f"step {step + 1}: non-finite reward; batch skipped "
                                  f"({counters.skipped_batches} so far)", stacklevel=2)
                m = {"step": step + 1, "skipped": True, "kl_coef": kl_coef, **counters.__dict__}
                if main:
                    metrics_f.append(m)
                _maybe_checkpoint(cfg, acc, out, unwrapped, opt, sched, step, kl_coef, counters)
                continue
            t_score = time.perf_counter()
            # 3.-4. reference log-probs, old log-probs and values
            with torch.no_grad(), acc.autocast():
                B = len(idx)
                ref_lp, old_v, old_lp, ent_t = (torch.zeros_like(mask) for _ in range(4))
                lengths = ro.attention_mask.sum(1)
                for rows in length_sorted_chunks(range(B), lengths, cfg.micro_batch_size):
                    r = torch.tensor(rows, device=mask.device)
                    ref_lp[r] = reference_logprobs(unwrapped.policy, ref, ro.input_ids[r], ro.attention_mask[r],
                                                   ro.prompt_len, cfg.temperature).float()
                    o = unwrapped(ro.input_ids[r], ro.attention_mask[r], ro.prompt_len, cfg.temperature,
                                  with_logprobs=ro.logprobs is None)
                    old_v[r], old_lp[r], ent_t[r] = o.values.float(), o.logprobs.float(), o.entropy.float()
                if ro.logprobs is not None:  # from the sampling pass: no second policy pass
                    old_lp, ent_t = ro.logprobs.to(acc.device), ro.entropy.to(acc.device)
                entropy = masked_mean(ent_t, mask)
                # 5. per-token rewards, advantages
                score_t = r_score
                if cfg.whiten_rewards:
                    score_t = masked_whiten(r_score, mask, shift_mean=False)
                tr = assemble_rewards(score_t, old_lp, ref_lp, mask, alpha=cfg.alpha, beta=kl_coef,
                                      estimator=cfg.kl_estimator)
                adv = gae(tr.rewards, old_v, mask, cfg.gamma, cfg.lam)
                advantages = masked_whiten(adv.advantages, mask) if cfg.whiten_advantages else adv.advantages
            t_fwd = time.perf_counter()
            # 6. K epochs of minibatch updates
            unwrapped.train()
            stats = _ppo_epochs(cfg, acc, model, opt, sched, params, ro, mask, old_lp, old_v, advantages,
                                adv.returns, step, counters)
            t_upd = time.perf_counter()
            # 7. KL controller, metrics, samples, checkpoint
            seq_kl = (tr.kl.sum(1)).mean()
            kl_for_ctl = acc.reduce(seq_kl.detach().clone(), "mean").item()
            new_coef = update_kl_coef(kl_coef, kl_for_ctl, cfg.kl_target, cfg.kl_horizon, cfg.batch_size * world)
            counters.empty_responses += empty
            counters.truncated_prompts += cut
            n_tokens = acc.reduce(mask.sum().detach().clone(), "sum").item()
            dt = time.perf_counter() - t0
            local = {
                "score": float(sum(totals) / len(totals)),
                "reward": tr.rewards.sum(1).mean().item(),
                "kl": seq_kl.item(),
                "entropy": entropy.item(),
                "response_length": mask.sum(1).mean().item(),
                **stats,
            }
            reduced = acc.reduce(torch.tensor(list(local.values()), device=acc.device), "mean").tolist()
            m = {"step": step + 1, **{k: round(v, 6) for k, v in zip(local, reduced)},
                 "kl_coef": kl_coef, "lr": sched.get_last_lr()[0], "tokens_per_s": round(n_tokens / dt, 2),
                 "seconds": round(dt, 3), "seconds_generate": round(t_gen - t0, 3),
                 "seconds_reward": round(t_score - t_gen, 3), "seconds_ref_value": round(t_fwd - t_score, 3),
                 "seconds_update": round(t_upd - t_fwd, 3), "processes": world, **counters.__dict__}
            kl_coef = new_coef
            last = m
            if main:
                metrics_f.append(m)
                reporters.log(m, step + 1)
                if (step + 1) % cfg.log_samples_every == 0 or step == 0:
                    for i in range(min(2, len(ro.texts))):
                        samples_f.append({"step": step + 1, "i": i, "prompt": prompts[i], "response": ro.texts[i],
                                          "score": totals[i]})
                    log(f"step {step + 1} sample: {ro.texts[0][:200]!r} (score {totals[0]:.3f})")
            if on_step:
                on_step(step + 1, cfg.steps, m)
            _maybe_checkpoint(cfg, acc, out, unwrapped, opt, sched, step, kl_coef, counters)
        if main:
            _save_final(out, unwrapped, tok)
            write_json(out / "summary.json", {"steps": cfg.steps, "last": last, "counters": counters.__dict__})
    finally:
        if main:
            metrics_f.close()
            samples_f.close()
            reporters.close()
    return RunResult(out, cfg.steps, last, counters)


def _maybe_checkpoint(cfg, acc, out, ac, opt, sched, step, kl_coef, counters) -> None:
    if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
        acc.wait_for_everyone()
        if acc.is_main_process:
            _save_checkpoint(out, ac, opt, sched, {"step": step + 1, "kl_coef": kl_coef,
                                                   "counters": dict(counters.__dict__), "config": cfg.to_dict()})
        acc.wait_for_everyone()


def _ppo_epochs(cfg, acc, model, opt, sched, params, ro, mask, old_lp, old_v, advantages, returns, step, counters) -> dict:
    """K epochs over shuffled minibatches with gradient accumulation; returns mean statistics."""
    B = mask.shape[0]
    g = torch.Generator().manual_seed(_step_seed(cfg.seed, step, acc.process_index) + 1)
    keys = ("pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "approx_kl", "grad_norm")
    lengths = ro.attention_mask.sum(1).tolist()
    acc_stats = {k: [] for k in keys}
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(B, generator=g).tolist()
        for s in range(0, B, cfg.minibatch_size):
            mb = perm[s: s + cfg.minibatch_size]
            n_tok = float(mask[mb].sum().item())
            micro = length_sorted_chunks(mb, lengths, cfg.micro_batch_size)
            finite = True
            for j, rows in enumerate(micro):
                rows_t = torch.tensor(rows, device=mask.device)
                sync = j == len(micro) - 1
                ctx = acc.no_sync(model) if not sync else _nullcontext()
                with ctx:
                    f = model(ro.input_ids[rows_t], ro.attention_mask[rows_t], ro.prompt_len, cfg.temperature,
                              with_entropy=cfg.ent_coef > 0)
                    m = mask[rows_t]
                    pl = policy_loss(f.logprobs, old_lp[rows_t], advantages[rows_t], m, cfg.clip, n_tok)
                    vl = value_loss(f.values, old_v[rows_t], returns[rows_t], m, cfg.clip_value, n_tok)
                    loss = pl.loss + cfg.vf_coef * vl.loss
                    if cfg.ent_coef > 0:
                        loss = loss - cfg.ent_coef * (f.entropy * m).sum() / max(n_tok, 1.0)
                    finite = finite and bool(torch.isfinite(loss))
                    acc.backward(loss)
                w = m.sum().item() / max(n_tok, 1.0)
                for k, v in (("pg_loss", pl.loss * max(n_tok, 1.0) / max(m.sum().item(), 1.0)),
                             ("vf_loss", vl.loss * max(n_tok, 1.0) / max(m.sum().item(), 1.0)),
                             ("clipfrac", pl.clipfrac), ("vf_clipfrac", vl.clipfrac), ("approx_kl", pl.approx_kl)):
                    acc_stats[k].append((float(v.detach()) if torch.is_tensor(v) else float(v), w))
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            if not finite or not torch.isfinite(norm):
                opt.zero_grad(set_to_none=True)
                counters.skipped_updates += 1
                warnings.warn(f"step {step + 1}: non-finite loss or gradient; update skipped "
                              f"({counters.skipped_updates} so far)", stacklevel=2)
                continue
            acc_stats["grad_norm"].append((float(norm), 1.0))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    return {k: (sum(v * w for v, w in xs) / sum(w for _, w in xs) if xs and sum(w for _, w in xs) > 0 else 0.0)
            for k, xs in acc_stats.items()}


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _save_final(out: Path, ac: ActorCritic, tok) -> None:
    """The trained policy (PEFT adapter or full model) with its tokenizer, and the value head."""
    tmp = out / ".policy.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    ac.policy.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    dst = out / "policy"
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    torch.save(ac.value_head.state_dict(), out / "value_head.pt")
