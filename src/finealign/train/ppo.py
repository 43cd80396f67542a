"""Fine-grained PPO: a thin trainer over ``core.ppo``; runs alone or under ``accelerate launch`` (DDP).

``train_ppo`` sets the run up, then every step is ``ppo_step``, numbered calls over typed containers:

  1. prompts: the step's slice of a seeded shuffle (``PromptBatch``)
  2. rollout: sample one response per prompt with the policy (``ppo_rollout.Rollout``)
  3. rewards: the scorer's r_t on the policy's tokens (per token, or the sum on the last token)
  4. reference log-probs (LoRA adapters off, or a separate reference model), old log-probs and
     values (the actor-critic before the update), per-token rewards R_t = alpha * r_t - beta * kl_t,
     GAE and whitening (``RolloutBatch``)
  5. K epochs over shuffled minibatches, gradient accumulation over micro-batches, clipped policy
     and value losses, max grad norm, LR schedule (``UpdateStats``)
  6. the step's statistics and the KL controller's next coefficient (``StepStats``)

and the I/O of a step (metrics, trackers, samples, progress, checkpoint) happens at its end, in
``_record_step``. Every step reseeds from (seed, step, rank), and the checkpoint (``run_state``) holds
the trainable weights, the optimizer, the scheduler, the KL coefficient, the counters and the RNG
states, so a resumed run computes the same numbers as an uninterrupted one.

Notation: B rollouts per process, P prompt tokens, T response tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from ..core.ppo import (Advantages, TokenRewards, assemble_rewards, gae, group_advantages, masked_mean,
                        masked_whiten, policy_loss, reinforce_pp_advantages, rewards_to_go, token_group_advantages,
                        update_kl_coef, value_loss)
from ..data.identity import check_verb, resumable_fields
from ..errors import FinealignError
from ..rewards.inputs import input_fingerprints
from . import run_state
from .accel import adamw, make_accelerator
from .ppo_config import PPOConfig, dump_yaml
from .ppo_rollout import (ActorCritic, Rollout, encode_prompts, length_sorted_chunks, reference_logprobs, sample,
                          score_rewards)
from .run_state import MetricsLog, TrainResult

UPDATE_KEYS = ("pg_loss", "vf_loss", "clipfrac", "vf_clipfrac", "approx_kl", "grad_norm")


@dataclass(frozen=True)
class Counters:
    """Robustness counters, saved in checkpoints and reported in metrics (cumulative over the run)."""

    skipped_batches: int = 0  # non-finite rewards
    skipped_updates: int = 0  # non-finite loss or gradient
    empty_responses: int = 0
    truncated_prompts: int = 0

    def add(self, **deltas: int) -> "Counters":
        return dataclasses.replace(self, **{k: getattr(self, k) + v for k, v in deltas.items()})


class PromptBatch(NamedTuple):
    """This process's prompts of one step: left-padded ids and mask (B, P), and truncation count."""

    prompts: list
    ids: torch.Tensor
    mask: torch.Tensor
    truncated: int


class RolloutBatch(NamedTuple):
    """A scored rollout with everything the update needs; (B, T) tensors on the device."""

    rollout: Rollout
    mask: torch.Tensor  # response tokens (float)
    scores: torch.Tensor  # the reward model's r_t
    totals: list[float]  # each response's total score
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    entropy: torch.Tensor  # scalar: mean entropy of pi over response tokens
    rewards: TokenRewards  # R_t and kl_t
    advantages: torch.Tensor
    returns: torch.Tensor


class UpdateStats(NamedTuple):
    """Token-weighted means over the step's micro-batches (``grad_norm`` over its optimizer steps)."""

    pg_loss: float
    vf_loss: float
    clipfrac: float
    vf_clipfrac: float
    approx_kl: float
    grad_norm: float
    skipped_updates: int


@dataclass(frozen=True)
class StepStats:
    """One step's metrics line (means over processes; ``seconds*`` from this process)."""

    step: int
    values: dict  # score, reward, kl, entropy, response_length and the UPDATE_KEYS, rounded
    kl_coef: float  # the coefficient used in this step
    lr: float
    tokens_per_s: float
    seconds: dict  # total, generate, reward, ref_value, update
    processes: int
    counters: Counters  # after this step
    next_kl_coef: float  # the KL controller's coefficient for the next step
    skipped_updates: int = 0  # minibatch updates skipped in this step (non-finite loss or gradient)
    skipped: bool = False  # a batch with non-finite rewards: no update

    def row(self) -> dict:
        """The ``metrics.jsonl`` line."""
        if self.skipped:
            return {"step": self.step, "skipped": True, "kl_coef": self.kl_coef, **dataclasses.asdict(self.counters)}
        s = self.seconds
        return {"step": self.step, **self.values, "kl_coef": self.kl_coef, "lr": self.lr,
                "tokens_per_s": self.tokens_per_s, "seconds": s["total"], "seconds_generate": s["generate"],
                "seconds_reward": s["reward"], "seconds_ref_value": s["ref_value"], "seconds_update": s["update"],
                "processes": self.processes, **dataclasses.asdict(self.counters)}


class StepOutput(NamedTuple):
    """What ``ppo_step`` computed and ``_record_step`` writes."""

    stats: StepStats
    batch: PromptBatch
    rollout: Rollout
    totals: list[float]  # each response's total score


@dataclass
class Run:
    """The objects of one run, set up once by ``train_ppo``."""

    cfg: PPOConfig
    acc: object  # accelerate.Accelerator
    model: torch.nn.Module  # the prepared (possibly DDP-wrapped) ActorCritic
    unwrapped: ActorCritic
    ref: torch.nn.Module | None
    tok: object
    scorer: object
    opt: torch.optim.Optimizer
    sched: object
    params: list
    items: list  # PromptItem
    texts: list[str]  # rendered prompts
    stops: list[int]
    sum_checked: bool = False  # the token rewards were checked to add up to the scorer's score (first step)
    critic_pending: bool = False  # a fresh gae run: the value bias is set from the first batch's mean return
    frozen: frozenset = frozenset()  # ids of the policy's parameters, whose gradients a critic warm-up step drops


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 9_176 + rank * 101) % (2**31 - 1)


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
    if _checkpoint_activations(cfg, policy.config, device, 2 if critic is not None else 1):
        # active in the updates (train mode) only; rollouts run in eval mode
        from ..models.compat import enable_activation_checkpointing
        from .memory import release_freed_memory

        release_freed_memory()  # freed per-layer activations go back to the OS (train/memory.py)
        for m in (policy, critic):
            if m is not None:
                enable_activation_checkpointing(m)
    hidden = policy.config.hidden_size
    return ActorCritic(policy, hidden, critic).to(device), tok, ref


def _checkpoint_activations(cfg: PPOConfig, config, device: str, models: int) -> bool:
    """``cfg.gradient_checkpointing``, or with auto (None) whether ``models`` copies of a micro-batch's
    activations at the longest prompt + response would not fit (``memory.use_activation_checkpointing``)."""
    from .memory import activation_bytes, use_activation_checkpointing

    need = models * activation_bytes(cfg.micro_batch_size, cfg.max_prompt_length + cfg.max_new_tokens,
                                     config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                                     dtype_bytes=2 if cfg.dtype in ("bfloat16", "float16") else 4)
    return use_activation_checkpointing(cfg.gradient_checkpointing, need, device)


def _fingerprint(cfg: PPOConfig) -> tuple[dict, dict]:
    """The run's fingerprint and the defaults of its fields (for checkpoints of older versions)."""
    defaults = {f.name: f.default for f in dataclasses.fields(PPOConfig) if f.default is not dataclasses.MISSING}
    resumable = resumable_fields(PPOConfig)  # marked on its fields (data.identity): steps grows, logging, device
    return run_state.fingerprint(cfg.to_dict(), resumable), run_state.fingerprint(defaults, resumable)


def check_settings(cfg: PPOConfig) -> None:
    """Raise ``FinealignError`` when ``cfg.out`` holds a checkpoint written with other settings (the check a
    resumed run makes, without loading any model), or a folder made by another verb. No checkpoint: nothing to
    check."""
    check_verb(cfg.out, "train ppo", inputs=input_fingerprints(cfg), claim=False)
    ck = run_state.latest_checkpoint(cfg.out)
    if ck is not None:
        saved = json.loads((ck / "trainer_state.json").read_text(encoding="utf-8"))["fingerprint"]
        fp, defaults = _fingerprint(cfg)
        run_state.check_fingerprint(saved, fp, Path(cfg.out), defaults)


def train_ppo(cfg: PPOConfig, scorer=None, on_step: Callable[[int, int, dict], None] | None = None,
              log: Callable[[str], None] = lambda m: None) -> TrainResult:
    """Run (or resume) PPO as ``cfg`` says.

    ``scorer``: a ``Scorer`` instead of ``cfg.reward``; ``on_step(step, total, metrics_row)`` after every
    step; ``log`` gets messages. Returns a ``TrainResult`` whose ``metrics`` is the last metrics line and
    whose ``details["counters"]`` holds the robustness counters. Raises ``FinealignError`` for too few
    prompts, a failing scorer, a ``finealign sim policy`` made for another task than the reward's, or an
    output folder holding a run with another configuration.
    """
    from ..data.prompts import read_prompts
    from ..generation import render_prompt, stop_token_ids
    from ..rewards.base import TokenScorer, load_scorer
    from ..sim.policy import check_ppo_policy

    check_ppo_policy(cfg.policy, cfg.reference, cfg.reward, cfg.prompts)  # a sim policy made for another task
    out = Path(cfg.out)
    acc = make_accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available(),
                           mixed_precision=cfg.mixed_precision, **run_state.tracker_kwargs(cfg.report_to, out))
    main = acc.is_main_process
    items = read_prompts(cfg.prompts)  # bad or too few prompts fail before the folder is claimed
    need = cfg.batch_size // cfg.rollouts_per_prompt * acc.num_processes
    if len(items) < need:
        raise FinealignError(f"{cfg.prompts}: {len(items)} prompts, fewer than batch_size / rollouts_per_prompt x "
                             f"processes = {need}")
    check_verb(out, "train ppo", inputs=input_fingerprints(cfg), claim=main)  # another verb's folder, other inputs
    run_state.seed_all(cfg.seed)
    ac, tok, ref = _load_models(cfg, str(acc.device))
    scorer = load_scorer(scorer or cfg.reward)
    if cfg.granularity == "token" and not isinstance(scorer, TokenScorer) and main:
        warnings.warn(f"reward {getattr(scorer, 'name', cfg.reward)!r} is not a token scorer: its score lands on the "
                      "last token (same as --granularity sequence)", stacklevel=2)
    params = [p for p in ac.parameters() if p.requires_grad]
    critic = {id(p) for p in ac.critic_parameters()}
    groups = [{"params": [p for p in params if id(p) not in critic], "lr": cfg.learning_rate},
              {"params": [p for p in params if id(p) in critic], "lr": cfg.critic_lr}]  # the critic's own group
    opt = adamw([g for g in groups if g["params"]], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    n_opt = cfg.steps * cfg.ppo_epochs * (cfg.batch_size // cfg.minibatch_size)
    sched = run_state.make_scheduler(opt, schedule=cfg.lr_schedule, warmup_steps=cfg.warmup_steps, total_steps=n_opt)
    if main:
        log(f"precision: {cfg.dtype} weights, autocast {cfg.mixed_precision} (--mixed-precision auto: bf16 on "
            "CUDA GPUs with bf16 and AMX-BF16 CPUs)")
    start, kl_coef, counters = _resume(cfg, acc, ac, opt, sched, log)
    model, opt = acc.prepare(ac, opt)
    run = Run(cfg, acc, model, acc.unwrap_model(model), ref, tok, scorer, opt, sched, params, items,
              [render_prompt(tok, it.prompt) for it in items], stop_token_ids(ac.policy, tok),
              critic_pending=start == 0 and cfg.advantage == "gae",
              frozen=frozenset(id(p) for p in params if id(p) not in critic))
    if main:
        from ..data.io import write_text_atomic

        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.yaml", dump_yaml(cfg))
    metrics = MetricsLog(out, start, acc=acc, project="finealign-ppo", config=cfg.to_dict(), main=main)
    samples = MetricsLog(out, start, name="samples.jsonl", main=main)
    last = metrics.last  # a rerun of a finished run reports its last line
    try:
        for step in range(start, cfg.steps):
            kl_coef, counters, last = _record_step(run, ppo_step(run, step, kl_coef, counters), metrics, samples,
                                                   on_step, log)
        if main:
            _save_final(out, run.unwrapped, tok)
            from ..data.io import write_json

            write_json(out / "summary.json", {"steps": cfg.steps, "last": last,
                                              "counters": dataclasses.asdict(counters)})
    finally:
        metrics.close()
        samples.close()
    return TrainResult(out, cfg.steps, True, last, details={"counters": dataclasses.asdict(counters)})


def _resume(cfg: PPOConfig, acc, ac: ActorCritic, opt, sched, log) -> tuple[int, float, Counters]:
    """(first step, KL coefficient, counters): from ``OUT/checkpoint`` when there is one."""
    out = Path(cfg.out)
    fp, defaults = _fingerprint(cfg)
    if acc.is_main_process:
        run_state.recover_checkpoint(out)
    acc.wait_for_everyone()
    ck = run_state.load_checkpoint(out, fp, defaults=defaults)
    if ck is None:
        return 0, cfg.kl_coef, Counters()
    run_state.restore(ck, ac, opt, sched, out / run_state.CHECKPOINT)
    log(f"resuming {out} from step {ck.step}")
    return ck.step, ck.extra["kl_coef"], Counters(**ck.extra["counters"])


def ppo_step(run: Run, step: int, kl_coef: float, counters: Counters) -> StepOutput:
    """One PPO step (0-based ``step``) with KL coefficient ``kl_coef``: steps 1-6 of the module docstring.

    ``counters`` are the run's before the step. Writes nothing.
    """
    cfg, acc = run.cfg, run.acc
    t = [time.perf_counter()]
    run_state.seed_all(_step_seed(cfg.seed, step, acc.process_index))
    batch = prompt_batch(run, step)  # 1.
    ro = rollout(run, batch)  # 2.
    t.append(time.perf_counter())
    scores, totals = rewards(run, batch, ro)  # 3.
    if _any_process(acc, not bool(torch.isfinite(scores).all())):
        counters = counters.add(skipped_batches=1, truncated_prompts=batch.truncated)
        stats = StepStats(step + 1, {}, kl_coef, 0.0, 0.0, {}, acc.num_processes, counters, kl_coef, skipped=True)
        return StepOutput(stats, batch, ro, totals)
    t.append(time.perf_counter())
    rb = score_rollout(run, ro, scores, totals, kl_coef)  # 4.
    t.append(time.perf_counter())
    upd = ppo_epochs(run, rb, step)  # 5.
    t.append(time.perf_counter())
    return StepOutput(step_stats(run, step, rb, upd, kl_coef, counters, batch, t), batch, ro, totals)  # 6.


def prompt_batch(run: Run, step: int) -> PromptBatch:
    """This process's prompts of ``step``: epoch-wise seeded shuffles, each process its own slice; each
    prompt repeated ``rollouts_per_prompt`` times in a row (a group)."""
    cfg, world, rank = run.cfg, run.acc.num_processes, run.acc.process_index
    n = cfg.batch_size // cfg.rollouts_per_prompt  # distinct prompts per process and step
    per_epoch = len(run.items) // (n * world)
    epoch, slot = divmod(step, per_epoch)
    order = torch.randperm(len(run.items), generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch)).tolist()
    first = slot * n * world + rank * n
    idx = [i for i in order[first: first + n] for _ in range(cfg.rollouts_per_prompt)]
    ids, mask, cut = encode_prompts(run.tok, [run.texts[i] for i in idx], cfg.max_prompt_length)
    return PromptBatch([run.items[i].prompt for i in idx], ids, mask, cut)


def rollout(run: Run, batch: PromptBatch) -> Rollout:
    """One sampled response per prompt, with log pi_old from the sampling pass unless ``recompute``."""
    cfg, acc = run.cfg, run.acc
    run.unwrapped.eval()
    with acc.autocast():
        return sample(run.unwrapped.policy, run.tok, batch.ids.to(acc.device), batch.mask.to(acc.device),
                      max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, stop_ids=run.stops,
                      min_new_tokens=cfg.max_new_tokens if cfg.ignore_eos else 0,
                      with_logprobs=cfg.old_logprobs == "generation")


def rewards(run: Run, batch: PromptBatch, ro: Rollout) -> tuple[torch.Tensor, list[float]]:
    """The reward model's r_t (B, T) on the device, and each response's total."""
    with run.acc.autocast():
        scores, totals = score_rewards(run.scorer, batch.prompts, ro, run.tok, run.cfg.granularity,
                                       check_sum=not run.sum_checked)
    run.sum_checked = True
    return scores.to(run.acc.device), totals


def _any_process(acc, flag: bool) -> bool:
    return acc.reduce(torch.tensor([float(flag)], device=acc.device), "sum").item() > 0


@torch.no_grad()
def score_rollout(run: Run, ro: Rollout, scores: torch.Tensor, totals: list[float], kl_coef: float) -> RolloutBatch:
    """Reference log-probs, old log-probs and values (micro-batches of similar length), then per-token
    rewards, GAE and whitening."""
    cfg, acc, ac = run.cfg, run.acc, run.unwrapped
    mask = ro.response_mask.to(acc.device)
    with acc.autocast():
        ref_lp, old_v, old_lp, ent_t = (torch.zeros_like(mask) for _ in range(4))
        for rows in length_sorted_chunks(range(mask.shape[0]), ro.attention_mask.sum(1), cfg.micro_batch_size):
            r = torch.tensor(rows, device=mask.device)
            ref_lp[r] = reference_logprobs(ac.policy, run.ref, ro.input_ids[r], ro.attention_mask[r],
                                           ro.prompt_len, cfg.temperature).float()
            if cfg.advantage != "gae" and ro.logprobs is not None:
                continue  # no critic reads values, and log pi_old came from sampling: no actor pass at all
            o = ac(ro.input_ids[r], ro.attention_mask[r], ro.prompt_len, cfg.temperature,
                   with_logprobs=ro.logprobs is None)
            old_v[r], old_lp[r], ent_t[r] = o.values.float(), o.logprobs.float(), o.entropy.float()
        if ro.logprobs is not None:  # from the sampling pass: no second policy pass
            old_lp, ent_t = ro.logprobs.to(acc.device), ro.entropy.to(acc.device)
        entropy = masked_mean(ent_t, mask)
        score_t = masked_whiten(scores, mask, shift_mean=False) if cfg.whiten_rewards else scores
        tr = assemble_rewards(score_t, old_lp, ref_lp, mask, alpha=cfg.alpha, beta=kl_coef, estimator=cfg.kl_estimator)
        if run.critic_pending:  # a fresh critic: every value at the first batch's mean return
            mean_return = float(masked_mean(rewards_to_go(tr.rewards, mask, cfg.gamma), mask))
            ac.init_value_bias(mean_return)
            old_v = torch.where(mask.bool(), torch.full_like(old_v, mean_return), torch.zeros_like(old_v))
            run.critic_pending = False
        adv = advantages_of(cfg, tr.rewards, old_v, mask)
        advantages = masked_whiten(adv.advantages, mask) if cfg.whiten_advantages else adv.advantages
    return RolloutBatch(ro, mask, scores, totals, old_lp, old_v, entropy, tr, advantages, adv.returns)


def advantages_of(cfg: PPOConfig, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> Advantages:
    """The configured estimator (``--advantage``) over R_t (B, T): GAE with the critic's values, or critic-free
    (``core.ppo``: RLOO, PRIME's per-token leave-one-out, REINFORCE++)."""
    k = cfg.rollouts_per_prompt
    if cfg.advantage == "rloo":
        return group_advantages(rewards, mask, k, cfg.gamma)
    if cfg.advantage == "prime":
        return token_group_advantages(rewards, mask, k, cfg.gamma)
    if cfg.advantage == "reinforce++":
        return reinforce_pp_advantages(rewards, mask, cfg.gamma)
    return gae(rewards, values, mask, cfg.gamma, cfg.lam)


def ppo_epochs(run: Run, rb: RolloutBatch, step: int) -> UpdateStats:
    """K epochs over shuffled minibatches; each minibatch is one optimizer step over micro-batches of
    similar length whose losses are normalised by the minibatch's token count (exact accumulation).
    A minibatch with a non-finite loss or gradient is skipped (counted)."""
    cfg, acc = run.cfg, run.acc
    run.unwrapped.train()
    B = rb.mask.shape[0]
    g = torch.Generator().manual_seed(_step_seed(cfg.seed, step, acc.process_index) + 1)
    lengths = rb.rollout.attention_mask.sum(1).tolist()
    acc_stats: dict[str, list[tuple[float, float]]] = {k: [] for k in UPDATE_KEYS}
    skipped = 0
    warmup = step < cfg.critic_warmup  # the critic learns, the policy is frozen
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(B, generator=g).tolist()
        for s in range(0, B, cfg.minibatch_size):
            mb = perm[s: s + cfg.minibatch_size]
            micro = length_sorted_chunks(mb, lengths, cfg.micro_batch_size)
            finite = _minibatch_backward(run, rb, micro, float(rb.mask[mb].sum().item()), acc_stats, warmup)
            if warmup:  # nothing reaches the policy's weights (the value loss flows into a shared backbone)
                for p in run.params:
                    if id(p) in run.frozen:
                        p.grad = None
            norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.max_grad_norm)
            if not finite or not torch.isfinite(norm):
                run.opt.zero_grad(set_to_none=True)
                skipped += 1
                continue
            acc_stats["grad_norm"].append((float(norm), 1.0))
            run.opt.step()
            run.sched.step()
            run.opt.zero_grad(set_to_none=True)
    means = {k: (sum(v * w for v, w in xs) / sum(w for _, w in xs) if xs and sum(w for _, w in xs) > 0 else 0.0)
             for k, xs in acc_stats.items()}
    return UpdateStats(**means, skipped_updates=skipped)


def _minibatch_backward(run: Run, rb: RolloutBatch, micro: list[list[int]], n_tok: float, acc_stats: dict,
                        warmup: bool = False) -> bool:
    """Backward passes of one minibatch's micro-batches (gradients synced on the last); adds each
    micro-batch's statistics, weighted by its token share, to ``acc_stats``. Returns whether every loss
    was finite."""
    cfg, acc, ro, mask = run.cfg, run.acc, rb.rollout, rb.mask
    finite = True
    for j, rows in enumerate(micro):
        rows_t = torch.tensor(rows, device=mask.device)
        with acc.no_sync(run.model) if j < len(micro) - 1 else nullcontext():
            f = run.model(ro.input_ids[rows_t], ro.attention_mask[rows_t], ro.prompt_len, cfg.temperature,
                          with_entropy=cfg.ent_coef > 0)
            m = mask[rows_t]
            pl = policy_loss(f.logprobs, rb.old_logprobs[rows_t], rb.advantages[rows_t], m, cfg.clip, n_tok)
            vl = value_loss(f.values, rb.old_values[rows_t], rb.returns[rows_t], m, cfg.clip_value, n_tok)
            # critic-free estimators: the value loss weighs 0 (kept in the graph, so DDP sees every parameter
            # used); a critic warm-up step: the policy loss weighs 0
            loss = (0.0 if warmup else 1.0) * pl.loss + (cfg.vf_coef if cfg.advantage == "gae" else 0.0) * vl.loss
            if cfg.ent_coef > 0:
                loss = loss - cfg.ent_coef * (f.entropy * m).sum() / max(n_tok, 1.0)
            finite = finite and bool(torch.isfinite(loss))
            acc.backward(loss)
        w = m.sum().item() / max(n_tok, 1.0)
        rescale = max(n_tok, 1.0) / max(m.sum().item(), 1.0)  # the micro-batch's own per-token loss
        for k, v in (("pg_loss", pl.loss * rescale), ("vf_loss", vl.loss * rescale), ("clipfrac", pl.clipfrac),
                     ("vf_clipfrac", vl.clipfrac), ("approx_kl", pl.approx_kl)):
            acc_stats[k].append((float(v.detach()) if torch.is_tensor(v) else float(v), w))
    return finite


def step_stats(run: Run, step: int, rb: RolloutBatch, upd: UpdateStats, kl_coef: float, counters: Counters,
               batch: PromptBatch, t: list[float]) -> StepStats:
    """The step's metrics, averaged over processes (timings ``t``: start, generated, scored, evaluated, updated),
    and the KL controller's next coefficient (Ziegler et al.; unchanged without ``kl_target``)."""
    cfg, acc = run.cfg, run.acc
    seq_kl = acc.reduce(rb.rewards.kl.sum(1).mean().detach().clone(), "mean").item()
    next_coef = update_kl_coef(kl_coef, seq_kl, cfg.kl_target, cfg.kl_horizon, cfg.batch_size * acc.num_processes)
    empty = sum(not x.strip() for x in rb.rollout.texts)
    counters = counters.add(skipped_updates=upd.skipped_updates, empty_responses=empty, truncated_prompts=batch.truncated)
    n_tokens = acc.reduce(rb.mask.sum().detach().clone(), "sum").item()
    dt = time.perf_counter() - t[0]
    local = {"score": float(sum(rb.totals) / len(rb.totals)), "reward": rb.rewards.rewards.sum(1).mean().item(),
             "kl": rb.rewards.kl.sum(1).mean().item(), "entropy": rb.entropy.item(),
             "response_length": rb.mask.sum(1).mean().item(), **{k: getattr(upd, k) for k in UPDATE_KEYS}}
    reduced = acc.reduce(torch.tensor(list(local.values()), device=acc.device), "mean").tolist()
    seconds = {"total": round(dt, 3), "generate": round(t[1] - t[0], 3), "reward": round(t[2] - t[1], 3),
               "ref_value": round(t[3] - t[2], 3), "update": round(t[4] - t[3], 3)}
    return StepStats(step + 1, {k: round(v, 6) for k, v in zip(local, reduced)}, kl_coef, run.sched.get_last_lr()[0],
                     round(n_tokens / dt, 2), seconds, acc.num_processes, counters, next_coef, upd.skipped_updates)


def _record_step(run: Run, done: StepOutput, metrics: MetricsLog, samples: MetricsLog, on_step,
                 log) -> tuple[float, Counters, dict]:
    """The step's I/O: metrics line (and trackers), samples, warnings, progress, checkpoint.

    Returns the KL coefficient of the next step, the counters after the step and its metrics line.
    """
    cfg, acc, main = run.cfg, run.acc, run.acc.is_main_process
    stats, batch, ro, totals = done
    row = stats.row()
    if stats.skipped_updates:
        warnings.warn(f"step {stats.step}: non-finite loss or gradient; {stats.skipped_updates} update(s) skipped "
                      f"({stats.counters.skipped_updates} so far)", stacklevel=3)
    if main:
        metrics.append(row)
        if stats.skipped:
            warnings.warn(f"step {stats.step}: non-finite reward; batch skipped "
                          f"({stats.counters.skipped_batches} so far)", stacklevel=3)
        elif stats.step % cfg.log_samples_every == 0 or stats.step == 1:
            for i in range(min(2, len(ro.texts))):
                samples.append({"step": stats.step, "i": i, "prompt": batch.prompts[i], "response": ro.texts[i],
                                "score": totals[i]})
            log(f"step {stats.step} sample: {ro.texts[0][:200]!r} (score {totals[0]:.3f})")
    if on_step and not stats.skipped:
        on_step(stats.step, cfg.steps, row)
    if stats.step % cfg.save_every == 0 or stats.step == cfg.steps:
        acc.wait_for_everyone()
        if main:
            run_state.save_checkpoint(cfg.out, step=stats.step, trainable=run_state.trainable_tensors(run.unwrapped),
                                      optimizer=run.opt, scheduler=run.sched, fingerprint=_fingerprint(cfg)[0],
                                      extra={"kl_coef": stats.next_kl_coef,
                                             "counters": dataclasses.asdict(stats.counters)})
        acc.wait_for_everyone()
    return stats.next_kl_coef, stats.counters, row


def _save_final(out: Path, ac: ActorCritic, tok) -> None:
    """The trained policy (PEFT adapter or full model) with its tokenizer, and the value head."""
    from ..quiet import quiet_library_output

    tmp = out / ".policy.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_library_output():  # no "Writing model shards" bar: the trainer prints its own lines
        ac.policy.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    dst = out / "policy"
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    torch.save(ac.value_head.state_dict(), out / "value_head.pt")
