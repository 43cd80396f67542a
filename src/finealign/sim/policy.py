"""``finealign sim policy TASK --out DIR``: a small causal LM trained from scratch for one simulated task.

The policy of the fast token-vs-sequence testbed (docs/sim-policy.md). ``train_task_policy(cfg)``:

1. trains a byte-level BPE tokenizer on the task's own text (``policy_model.train_tokenizer``; ChatML
   chat template, ``<|im_end|>`` = EOS);
2. builds a Llama of a few million parameters from scratch (``policy_model.build_model``);
3. fine-tunes it on synthetic answers to freshly drawn task prompts (``sim.answers``: each item wrong with
   probability ``error_rate``), loss on the answer and its EOS;
4. measures its starting gold on ``eval_prompts`` prompts: ``eval_k`` samples each at temperature 1 (top-p
   1), judged by the task's gold scorer: mean, mean of the best of k, share of perfect samples;
5. saves a Hugging Face model directory in ``OUT`` (``config.json``, weights, tokenizer, generation config)
   that every verb loads as ``--policy OUT`` / ``--model OUT``, plus ``OUT/sim_policy.json``: the task and
   its options, the settings, parameter count, wall time, threads and the starting gold.

Evaluation prompts are held out of the SFT prompts for ``constraints`` and ``arithmetic``. ``facts`` is a
knowledge task: a model trained from scratch can only know the facts its SFT data shows, so its SFT
prompts cover the whole table and its evaluation questions are over facts it saw (with wrong answers at
the error rate).

Seeded (model init, prompt draws and answers are functions of ``seed`` and the step), resumable (a
checkpoint in ``OUT/.work`` every ``save_every`` steps; a killed run resumes from it and computes what an
uninterrupted run computes), and a rerun with other settings into the same folder is refused, naming them.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import RunArgs, non_negative, positive, setting, unit_interval
from ..errors import ConfigError, FinealignError
from . import TASKS, make_task
from .base import Instance, SimTask

RECORD = "sim_policy.json"
WORK = ".work"
# sizes: (vocab, hidden, layers, heads, steps, batch, eval prompts)
SIZES = {
    "tiny": dict(vocab_size=300, hidden_size=32, layers=2, heads=2, steps=6, batch_size=4, eval_prompts=3),
    "small": dict(vocab_size=1024, hidden_size=192, layers=4, heads=3, steps=700, batch_size=32, eval_prompts=32),
}
NOT_FINGERPRINTED = ("out", "overwrite", "save_every", "device")
ProgressFn = Callable[[int, int, str], None]


@dataclass(kw_only=True)
class SimPolicyConfig(RunArgs):
    """A small causal LM trained from scratch for one simulated task (tokenizer, SFT on synthetic answers)."""

    task: str = setting(None, positional=True, required=True, choices=tuple(TASKS),
                        help="Task: facts | constraints | arithmetic.")
    task_options: str = setting("", help="The task's difficulty knobs, as for `finealign sim make`.")
    facts_table: str | None = setting(None, help="facts: a relation,subject,answer CSV instead of the bundled table.")
    size: str = setting("small", choices=tuple(SIZES),
                        help="Preset of the sizes below: small (a few million parameters, the default) | tiny (tests).")
    error_rate: float = setting(0.3, check=unit_interval,
                                help="Probability that each item of a synthetic SFT answer is wrong, in [0, 1].")
    vocab_size: int | None = setting(None, check=positive, help="BPE vocabulary size (default: from --size).")
    hidden_size: int | None = setting(None, check=positive, help="Model width (default: from --size).")
    layers: int | None = setting(None, check=positive, help="Decoder layers (default: from --size).")
    heads: int | None = setting(None, check=positive, help="Attention heads (default: from --size).")
    steps: int | None = setting(None, check=positive, help="SFT steps (default: from --size).")
    batch_size: int | None = setting(None, check=positive, help="SFT examples per step (default: from --size).")
    learning_rate: float = setting(3e-3, flag="--lr", check=positive,
                                   help="Peak AdamW learning rate (5% warmup, cosine decay).")
    eval_prompts: int | None = setting(None, check=positive,
                                       help="Prompts of the starting-gold measurement (default: from --size).")
    eval_k: int = setting(4, check=positive, help="Samples per evaluation prompt (temperature 1).")
    max_new_tokens: int = setting(48, check=positive, help="Tokens per evaluation sample at most.")
    save_every: int = setting(50, check=non_negative, help="Checkpoint every N steps (0: only at the end).")
    device: str = setting("cpu", choices=("auto", "cpu", "cuda"), help="auto | cpu | cuda.")

    def validate(self):
        for k, v in SIZES[self.size].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.hidden_size % self.heads:
            raise ConfigError("heads", f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.vocab_size < 300:
            raise ConfigError("vocab_size", f"must be at least 300 (256 bytes, 3 specials, merges), "
                                            f"got {self.vocab_size}")
        if self.facts_table and self.task != "facts":
            raise ConfigError("facts_table", f"only the facts task reads a fact table (task is {self.task})")

    def build_task(self) -> SimTask:
        return make_task(self.task, self.task_options, **({"table": self.facts_table} if self.facts_table else {}))


# ---------------------------------------------------------------------------------------------- records and checks


def policy_record(spec) -> dict | None:
    """``sim_policy.json`` of a model spec that is a folder made by ``finealign sim policy``; None otherwise."""
    if not spec:
        return None
    path = Path(str(spec)).expanduser() / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise FinealignError(f"{path}: unreadable sim policy record ({e})") from None


def check_policy_task(spec, task: str | None, *, flag: str = "--policy") -> None:
    """``FinealignError`` when ``spec`` is a ``finealign sim policy`` folder made for another task than ``task``
    (nothing to check when ``task`` is None or ``spec`` is no such folder)."""
    rec = policy_record(spec)
    if rec is None or task is None:
        return
    made = rec.get("task")
    if made != task:
        raise FinealignError(f"{flag} {spec}: a sim policy made for task {made!r}, not for task {task!r}; "
                             f"train one with `finealign sim policy {task} --out DIR`")


def ppo_task(reward: str | None, prompts: str | None) -> str | None:
    """The sim task a PPO run is for: ``sim:TASK`` in the reward spec, else the ``meta.sim.task`` of the first
    prompt record (what ``finealign sim make`` writes); None when neither says."""
    if reward and str(reward).startswith("sim:"):
        return str(reward)[4:].split(",")[0] or None
    return prompts_task(prompts)


def prompts_task(prompts: str | None) -> str | None:
    """The ``meta.sim.task`` of a prompt file's first record (``finealign sim make`` writes it), or None."""
    if prompts and Path(prompts).is_file():
        from ..data.io import iter_objects

        try:
            for _, obj in iter_objects(prompts):
                sim = (obj.get("meta") or {}).get("sim") if isinstance(obj, dict) else None
                return sim.get("task") if isinstance(sim, dict) else None
        except FinealignError:
            return None  # the trainer reports a bad prompt file itself
    return None


def check_ppo_policy(policy, reference, reward, prompts) -> None:
    """The task check of ``train ppo``: a sim policy (or reference) folder made for another task is refused."""
    task = ppo_task(reward, prompts)
    made_for = prompts_task(prompts)
    if task and made_for and made_for != task:
        raise FinealignError(f"--prompts {prompts}: prompts made for sim task {made_for!r}, but the reward is "
                             f"sim:{task}; use --reward sim:{made_for} or prompts of task {task!r}")
    check_policy_task(policy, task, flag="--policy")
    check_policy_task(reference, task, flag="--reference")


def _prepare_out(cfg: SimPolicyConfig, out: Path, fp: str) -> dict | None:
    """The finished record when ``out`` already holds this policy; refuses other settings; clears on overwrite."""
    rec = policy_record(out)
    if rec is not None and cfg.overwrite:
        shutil.rmtree(out)
        rec = None
    if rec is None:
        if out.exists() and any(out.iterdir()):
            raise FinealignError(f"{out}: exists and is not a `finealign sim policy` folder; give another --out")
        return None
    if rec.get("fingerprint") != fp:
        old = rec.get("config", {})
        diff = [k for k, v in cfg.to_dict().items() if k not in NOT_FINGERPRINTED and old.get(k) != v]
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {getattr(cfg, k)!r} now" for k in diff) or "unknown"
        raise FinealignError(f"{out}: holds a sim policy made with other settings ({shown}); use another --out, "
                             "the same settings to resume, or --overwrite")
    return rec if rec.get("status") == "done" else None


def _write_record(out: Path, rec: dict) -> None:
    from ..data.io import write_json

    write_json(out / RECORD, rec)


# ---------------------------------------------------------------------------------------------- prompts


def heldout_prompts(task: SimTask, seed: int, n: int) -> list[Instance]:
    """The ``n`` evaluation prompts (seeded apart from the SFT prompts); ``FinealignError`` when the task cannot
    make ``n`` distinct ones."""
    from .policy_model import prompt_capacity

    cap = prompt_capacity(task, n)
    if cap < n:
        raise FinealignError(f"--eval-prompts {n}: the {task.name} task makes only {cap} distinct prompts with "
                             "these settings")
    return task.sample(random.Random(f"{seed}/eval"), n)


def train_prompts(task: SimTask, rng: random.Random, n: int, exclude: set[str]) -> list[Instance]:
    """``n`` SFT prompt instances drawn from ``rng``, none of whose prompts is in ``exclude``."""
    from .policy_model import prompt_capacity

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

    from .policy_model import task_corpus, train_tokenizer

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
    from ..train import run_state
    from .policy_model import sft_batch

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
    from ..train import run_state
    from .policy_model import build_model

    task = cfg.build_task()
    evals = heldout_prompts(task, cfg.seed, cfg.eval_prompts)  # bad sizes fail here, before any output
    out = Path(cfg.out)
    fp = cfg.fingerprint(exclude=NOT_FINGERPRINTED)
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
