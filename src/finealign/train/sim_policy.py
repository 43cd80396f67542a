"""The trainer of ``finealign sim policy``: a small causal LM from scratch for one sim task (tokenizer, SFT on
synthetic answers, starting gold). Its settings, the folder's record and the task checks are in
``finealign.sim.policy``.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from ..errors import FinealignError
from ..sim.base import Instance, SimTask
from ..data.identity import resumable_fields
from ..sim.policy import WORK, ProgressFn, SimPolicyConfig, _prepare_out, _write_record

def heldout_prompts(task: SimTask, seed: int, n: int) -> list[Instance]:
    """The ``n`` evaluation prompts (seeded apart from the SFT prompts); ``FinealignError`` when the task cannot
    make ``n`` distinct ones."""
    from ..sim.policy_model import prompt_capacity

    cap = prompt_capacity(task, n)
    if cap < n:
        raise FinealignError(f"--eval-prompts {n}: the {task.name} task makes only {cap} distinct prompts with "
                             "these settings")
    return task.sample(random.Random(f"{seed}/eval"), n)


def train_prompts(task: SimTask, rng: random.Random, n: int, exclude: set[str]) -> list[Instance]:
    """``n`` SFT prompt instances drawn from ``rng``, none of whose prompts is in ``exclude``."""
    from ..sim.policy_model import prompt_capacity

    out: list[Instance] = []
    for _ in range(1000):
        out += [x for x in task.sample(rng, prompt_capacity(task, n - len(out))) if x.prompt not in exclude]
        if len(out) >= n:
            return out[:n]
    raise FinealignError(f"the {task.name} task makes too few distinct prompts beside the {len(exclude)} evaluation "
                         "prompts; lower --eval-prompts or raise the task's difficulty knobs")


# ---------------------------------------------------------------------------------------------- training


def _tokenizer(cfg: SimPolicyConfig, task: SimTask, work: Path):
    """The task's tokenizer: trained once and kept in ``work/tokenizer`` (a resumed run loads it)."""
    from transformers import PreTrainedTokenizerFast

    from ..sim.policy_model import task_corpus, train_tokenizer

    d = work / "tokenizer"
    if (d / "tokenizer.json").exists():
        tok = PreTrainedTokenizerFast.from_pretrained(str(d))
        tok.padding_side = "left"
        return tok
    tok = train_tokenizer(task_corpus(task, cfg.seed, 2000), cfg.vocab_size)
    tmp = work / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    os.replace(tmp, d)
    return tok


def _sft(cfg: SimPolicyConfig, task: SimTask, model, tok, work: Path, fp: dict, exclude: set[str],
         on_progress: ProgressFn | None) -> tuple[float, float, float | None]:
    """Run (or resume) the SFT steps; returns (wall seconds, CPU seconds of this process, final smoothed loss),
    the seconds summed over every run of this folder."""
    from . import run_state
    from ..sim.policy_model import sft_batch

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.95), weight_decay=0.01)
    sched = run_state.make_scheduler(opt, schedule="cosine", warmup_steps=max(1, cfg.steps // 20),
                                     total_steps=cfg.steps)
    ck = run_state.load_checkpoint(work, fp)
    start, spent, cpu, loss_ema = 0, 0.0, 0.0, None
    if ck is not None:
        run_state.restore(ck, model, opt, sched, work)
        start, spent, cpu = ck.step, float(ck.extra.get("seconds", 0.0)), float(ck.extra.get("cpu_seconds", 0.0))
        loss_ema = ck.extra.get("loss")  # the smoothed loss goes on as in an uninterrupted run
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(start, cfg.steps):
        rng = random.Random(f"{cfg.seed}/sft/{step}")
        batch = sft_batch(tok, task, train_prompts(task, rng, cfg.batch_size, exclude), rng, cfg.error_rate)
        dev = next(model.parameters()).device
        loss = model(**{k: v.to(dev) for k, v in batch.items()}).loss
        if not torch.isfinite(loss):
            raise FinealignError(f"SFT loss is {loss.item()} at step {step + 1}; lower --lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_ema = loss.item() if loss_ema is None else 0.9 * loss_ema + 0.1 * loss.item()
        done = step + 1
        elapsed = time.perf_counter() - t0
        if on_progress is not None:
            on_progress(done, cfg.steps, f"loss {loss_ema:.3f}  {(done - start) / max(elapsed, 1e-9):.2f} step/s")
        if done == cfg.steps or (cfg.save_every and done % cfg.save_every == 0):
            run_state.save_checkpoint(work, step=done, trainable=run_state.trainable_tensors(model), optimizer=opt,
                                      scheduler=sched, fingerprint=fp,
                                      extra={"seconds": spent + elapsed, "loss": loss_ema,
                                             "cpu_seconds": cpu + time.process_time() - c0})
    model.eval()
    return spent + (time.perf_counter() - t0), cpu + time.process_time() - c0, loss_ema


def starting_gold(model, tok, task: SimTask, prompts: list[Instance], *, k: int, max_new_tokens: int, seed: int,
                  batch_size: int = 32) -> dict:
    """The gold of ``k`` samples per prompt at temperature 1 (top-p 1): ``{mean, best_of_k, perfect, empty,
    mean_tokens, prompts, samples, k}``; ``perfect`` and ``empty`` are shares of the samples."""
    from ..generation import generate_completions

    comps = generate_completions(model, tok, [p.prompt for p in prompts], n=k, temperature=1.0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                                 prompt_ids=[f"eval{i}" for i in range(len(prompts))])
    scores, best, perfect, empty, toks = [], [], 0, 0, 0
    for inst, row in zip(prompts, comps):
        js = [task.judge(inst, c.text) for c in row]
        scores += [j.score for j in js]
        best.append(max(j.score for j in js))
        perfect += sum(j.perfect for j in js)
        empty += sum(not c.text.strip() for c in row)
        toks += sum(c.n_tokens for c in row)
    n = max(len(scores), 1)
    return {"mean": round(sum(scores) / n, 4), "best_of_k": round(sum(best) / max(len(best), 1), 4),
            "perfect": round(perfect / n, 4), "empty": round(empty / n, 4), "mean_tokens": round(toks / n, 2),
            "prompts": len(prompts), "samples": len(scores), "k": k,
            "examples": [{"prompt": p.prompt, "response": row[0].text} for p, row in zip(prompts[:3], comps)]}


def _save_final(out: Path, model, tok) -> None:
    """The model directory files into ``out`` (each by rename; ``config.json`` last, so a folder that loads
    as a model holds complete weights)."""
    from ..quiet import quiet_library_output

    tmp = out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_library_output():
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    names = sorted(p.name for p in tmp.iterdir())
    for name in [n for n in names if n != "config.json"] + ["config.json"]:
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def train_task_policy(cfg: SimPolicyConfig, *, on_progress: ProgressFn | None = None,
                      log: Callable[[str], None] = lambda m: None) -> dict:
    """Train (or resume, or return the finished) task policy of ``cfg`` into ``cfg.out``; returns its record.

    Raises ``FinealignError`` (before writing anything) for a bad task option or too many evaluation
    prompts, and for an output folder made with other settings or holding something else.
    """
    from . import run_state
    from ..sim.policy_model import build_model

    task = cfg.build_task()
    evals = heldout_prompts(task, cfg.seed, cfg.eval_prompts)  # bad sizes fail here, before any output
    out = Path(cfg.out)
    fp = cfg.fingerprint(exclude=tuple(sorted(resumable_fields(SimPolicyConfig))))  # marked on its fields
    done = _prepare_out(cfg, out, fp)
    if done is not None:
        log(f"{out}: already trained (sim_policy.json); nothing to do")
        return done
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    rec = {"task": task.name, "task_options": task.options.describe(), "status": "training", "fingerprint": fp,
           "config": cfg.to_dict()}
    _write_record(out, rec)
    run_state.seed_all(cfg.seed)
    tok = _tokenizer(cfg, task, work)
    model = build_model(tok, hidden_size=cfg.hidden_size, layers=cfg.layers, heads=cfg.heads, seed=cfg.seed)
    from ..models.loading import resolve_device

    model.to(resolve_device(cfg.device))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"sim policy {task.name} -> {out}: {n_params / 1e6:.2f}M parameters, vocabulary {len(tok)}, {cfg.steps} SFT "
        f"steps x {cfg.batch_size} at error rate {cfg.error_rate}, {torch.get_num_threads()} thread(s)")
    exclude = set() if task.name == "facts" else {p.prompt for p in evals}
    seconds, cpu, loss = _sft(cfg, task, model, tok, work, run_state.fingerprint({"fp": fp}), exclude, on_progress)
    log(f"starting gold: {cfg.eval_k} samples of {len(evals)} held-out prompts at temperature 1")
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        gold = starting_gold(model, tok, task, evals, k=cfg.eval_k, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    eval_s, eval_cpu = time.perf_counter() - t0, time.process_time() - c0
    model.generation_config.pad_token_id = tok.pad_token_id
    _save_final(out, model, tok)
    rec.update(status="done", params=n_params, vocab=len(tok), threads=torch.get_num_threads(),
               seconds={"sft": round(seconds, 1), "eval": round(eval_s, 1), "total": round(seconds + eval_s, 1),
                        "cpu": round(cpu + eval_cpu, 1)},
               sft_loss=None if loss is None else round(loss, 4), gold=gold, heldout_from_sft=task.name != "facts")
    _write_record(out, rec)
    shutil.rmtree(work, ignore_errors=True)
    return rec


def gold_line(rec: dict) -> str:
    g = rec.get("gold", {})
    return (f"gold mean {g.get('mean', math.nan):.2f}, best of {g.get('k')} {g.get('best_of_k', math.nan):.2f}, "
            f"perfect {100 * g.get('perfect', math.nan):.0f}%")
