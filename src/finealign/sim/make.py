"""``finealign sim make``: prompts, policy samples, oracle edits, gold preferences and held-out sets.

Files written under ``OUT`` (JSONL in the formats the other verbs read):

=========================  =========================================================================
``prompts.jsonl``          training prompts ``{id, prompt, meta: {sim: {task, fields}}}`` (PPO, label)
``samples.jsonl``          k policy samples per prompt (``finealign generate``'s format)
``ratings.jsonl``          ``prompt/response/score``: each non-empty sample with its gold score (eval-rm)
``edits.jsonl``            ``prompt/original/edited``: the annotator's minimal edit of every imperfect
                           sample (train token-rm; noise knobs apply)
``pairs.jsonl``            ``prompt/chosen/rejected``: best vs worst sample of each prompt by gold score
                           (ties skipped; ``p_flip`` applies) (train dpo, eval-rm)
``heldout/``               the same five files for held-out prompts, noise-free; ``heldout/pairs.jsonl``
                           holds every pair of samples of a prompt whose gold scores differ
``summary.json``           counts and the policy's gold scores (mean, best of k, perfect fraction)
``sim.json``               the settings; a rerun resumes (samples are appended, derived files rewritten)
=========================  =========================================================================

Sampling resumes through ``generation.generate_file``; everything else is a deterministic function of
the samples and the settings, so it is recomputed on every run (changing only the noise knobs re-derives
edits and pairs without sampling again). A rerun with other prompt or sampling settings is refused.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import RunArgs, SamplingArgs, non_negative, normalize_dtype, positive, setting, unit_interval
from ..data.io import iter_objects, write_json, write_jsonl
from ..errors import ConfigError, FinealignError
from . import TASKS, knobs_help, make_task
from .annotator import Noise, annotate_edit, preference
from .base import SimTask, user_text

FILES = ("prompts.jsonl", "samples.jsonl", "ratings.jsonl", "edits.jsonl", "pairs.jsonl")


@dataclass(kw_only=True)
class SimMakeConfig(SamplingArgs, RunArgs):
    """Data sets of a simulated task with a gold reward: prompts, samples, edits, pairs, held-out sets."""

    task: str = setting(None, positional=True, required=True, choices=tuple(TASKS),
                        help="Task: facts | constraints | arithmetic.")
    n: int = setting(100, help="Training prompts.", check=positive)
    heldout: int = setting(50, help="Held-out prompts (disjoint from the training prompts).", check=non_negative)
    model: str = setting("smollm2-135m-instruct", reads="model", short="-m", deprecated=("--policy",),
                         help="The policy that samples the responses (model spec).")
    k: int = setting(4, help="Samples per prompt.", check=positive)
    task_options: str = setting("", help="Difficulty knobs of the task, key=value comma list. Knobs and defaults: "
                                         + knobs_help() + ".")
    facts_table: str | None = setting(None, reads="file",
                                      help="facts: a relation,subject,answer CSV instead of the bundled table.")
    p_miss: float = setting(0.0, identity="derived",
                            help="Annotator noise: probability that a wrong span is left unfixed.",
                            check=unit_interval)
    p_over_edit: float = setting(0.0, identity="derived",
                                 help="Annotator noise: probability that a correct word is changed too.",
                                 check=unit_interval)
    p_flip: float = setting(0.0, identity="derived",
                            help="Annotator noise: probability that a preference pair is reversed.",
                            check=unit_interval)
    annotator_seed: int = setting(0, identity="derived", help="Seed of the annotator's noise.")
    max_new_tokens: int = setting(64, help="Tokens per response at most.", check=positive)
    batch_size: int = setting(8, help="Rows per generation batch.", check=positive)
    dtype: str = setting("float32", help="Policy weights' dtype.")
    device: str = setting("auto", identity=False, choices=("auto", "cpu", "cuda"), help="auto | cpu | cuda.")

    def validate(self):
        self.dtype = normalize_dtype(self.dtype)  # one dtype vocabulary (bf16 = bfloat16)
        if self.facts_table and self.task != "facts":
            raise ConfigError("facts_table", f"only the facts task reads a fact table (task is {self.task})")

    def build_task(self) -> SimTask:
        return make_task(self.task, self.task_options, **({"table": self.facts_table} if self.facts_table else {}))

    @property
    def noise(self) -> Noise:
        return Noise(self.p_miss, self.p_over_edit, self.p_flip)


@dataclass(frozen=True)
class SplitSummary:
    prompts: int
    samples: int
    empty: int
    gold_mean: float  # mean gold score over all samples (empty ones included)
    gold_best_of_k: float  # mean over prompts of the best sample's gold score
    perfect: float  # fraction of samples with the maximum score
    edits: int
    pairs: int


def prompt_records(insts, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i:05d}", "prompt": x.prompt, "meta": {"sim": {"task": x.task, "fields": x.fields}}}
            for i, x in enumerate(insts, start=1)]


def read_samples(path: Path) -> list[dict]:
    return [o for _, o in iter_objects(path)]


def derive(task: SimTask, samples: list[dict], noise: Noise, seed: int, *, all_pairs: bool = False
           ) -> tuple[list[dict], list[dict], list[dict], dict]:
    """(ratings, edits, pairs, stats) from judged samples; each record's noise comes from its own seeded rng."""
    ratings, edits, pairs = [], [], []
    by_prompt: dict[str, list[tuple[dict, float]]] = {}
    scores, empty = [], 0
    for s in samples:
        inst = task.parse(user_text(s["prompt"]))
        text = s.get("completion", "")
        j = task.judge(inst, text)
        scores.append(j.score)
        if not text.strip():
            empty += 1
            continue
        sid, pid = str(s["id"]), str(s.get("prompt_id", s["id"]))
        meta = {"task": task.name, "prompt_id": pid, "sample": s.get("sample")}
        ratings.append({"id": sid, "prompt": s["prompt"], "response": text, "score": j.score, "meta": meta})
        by_prompt.setdefault(pid, []).append((s, j.score))
        if not j.perfect:
            ed = annotate_edit(task, inst, text, j, noise, random.Random(f"{seed}/edit/{sid}"))
            if ed.edited != text:
                edits.append({"id": sid, "prompt": s["prompt"], "original": text, "edited": ed.edited,
                              "meta": {**meta, "gold_original": j.score,
                                       "gold_edited": task.judge(inst, ed.edited).score,
                                       "fixed": ed.fixed, "missed": ed.missed, "over_edits": ed.over_edits}})
    for pid, group in by_prompt.items():
        cands = [(a, b) for i, a in enumerate(group) for b in group[i + 1:]] if all_pairs else \
            [(max(group, key=lambda x: x[1]), min(group, key=lambda x: x[1]))]
        for (sa, ga), (sb, gb) in cands:
            rng = random.Random(f"{seed}/pair/{sa['id']}/{sb['id']}")
            pick = preference(ga, gb, noise, rng)
            if pick is None:
                continue
            (c, gc), (r, gr) = ((sa, ga), (sb, gb)) if pick == 0 else ((sb, gb), (sa, ga))
            pairs.append({"id": f"{c['id']}>{r['id']}", "prompt": c["prompt"], "chosen": c["completion"],
                          "rejected": r["completion"], "meta": {"task": task.name, "prompt_id": pid, "gold_chosen": gc,
                                                                "gold_rejected": gr, "flipped": gc < gr}})
    k = max((len(g) for g in by_prompt.values()), default=1)
    best = [max(x[1] for x in g) for g in by_prompt.values()]
    stats = {"samples": len(samples), "empty": empty, "k": k,
             "gold_mean": round(sum(scores) / max(len(scores), 1), 4),
             "gold_best_of_k": round(sum(best) / max(len(best), 1), 4),
             "perfect": round(sum(abs(x - 1.0) < 1e-9 for x in scores) / max(len(scores), 1), 4),
             "edits": len(edits), "pairs": len(pairs)}
    return ratings, edits, pairs, stats


def _check_settings(out: Path, cfg: SimMakeConfig) -> None:
    """Refuse ``out`` when its samples were made with other settings or inputs (the policy's weights, the fact
    table), naming them; the annotator's noise knobs are ``derived`` (``data.identity``): edits and pairs are
    re-derived on every run. An older ``sim.json`` without input fingerprints is taken as made with these."""
    from ..data.identity import differences, resumable_fields
    from ..models.inputs import input_fingerprints  # files and models: the kinds a sim config reads

    path = out / "sim.json"
    resumable = tuple(sorted(resumable_fields(SimMakeConfig)))
    fp = cfg.fingerprint(exclude=resumable)
    inputs = input_fingerprints(cfg)
    if path.exists() and not cfg.overwrite:
        saved = json.loads(path.read_text(encoding="utf-8"))
        old = saved.get("config", {})
        diff = [k for k, v in cfg.to_dict().items() if k not in resumable and old.get(k) != v]
        if saved.get("fingerprint") != fp or "inputs" in saved and differences(saved["inputs"], inputs):
            diff = diff + [f"input {d}" for d in differences(saved.get("inputs", inputs), inputs)]
            raise FinealignError(f"{out}: holds sim data made with other settings ({', '.join(diff) or 'unknown'} "
                                 "differ); use another --out, the same settings, or --overwrite")
    if cfg.overwrite:
        for split in ("", "heldout/"):
            for f in FILES:
                (out / split / f).unlink(missing_ok=True)
    write_json(path, {"fingerprint": fp, "config": cfg.to_dict(), "inputs": inputs})


def make_sim(cfg: SimMakeConfig, *, model=None, on_progress: Callable[[int, int, str], None] | None = None,
             log: Callable[[str], None] = lambda m: None) -> dict:
    """Write (or resume) the data sets described in the module docstring; returns the summary.

    ``model``: an already loaded ``(model, tokenizer)`` pair (else ``cfg.model`` is loaded).
    Raises ``FinealignError`` for an unknown task, a bad fact table, more prompts than the task can
    make distinct, a policy folder made by ``finealign sim policy`` for another task, or an output folder
    made with other settings.
    """
    from ..generation import generate_file

    from .policy import check_policy_task

    task = cfg.build_task()
    check_policy_task(cfg.model, task.name)  # a `sim policy` folder made for another task: refused
    insts = task.sample(random.Random(cfg.seed), cfg.n + cfg.heldout)  # bad sizes fail before any output
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, cfg)
    splits = {"train": (out, prompt_records(insts[:cfg.n], f"{task.name}-"))}
    if cfg.heldout:
        splits["heldout"] = (out / "heldout", prompt_records(insts[cfg.n:], f"{task.name}-h"))
    if model is None:
        from ..models import load_model

        model = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    summary: dict = {"task": task.name, "task_options": task.options.describe(), "policy": cfg.model,
                     "noise": cfg.noise.__dict__}
    for name, (d, recs) in splits.items():
        write_jsonl(d / "prompts.jsonl", recs)
        log(f"{name}: sampling {cfg.k} responses for each of {len(recs)} prompts")
        generate_file(model, d / "prompts.jsonl", d / "samples.jsonl", k=cfg.k, temperature=cfg.temperature,
                      top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, batch_size=cfg.batch_size,
                      on_progress=on_progress)
        noise = cfg.noise if name == "train" else Noise()
        ratings, edits, pairs, stats = derive(task, read_samples(d / "samples.jsonl"), noise, cfg.annotator_seed,
                                              all_pairs=name == "heldout")
        write_jsonl(d / "ratings.jsonl", ratings)
        write_jsonl(d / "edits.jsonl", edits)
        write_jsonl(d / "pairs.jsonl", pairs)
        summary[name] = {"prompts": len(recs), **stats}
    write_json(out / "summary.json", summary)
    return summary


def edits_as_pairs(edits: list[dict]) -> list[dict]:
    """Edit records as preference pairs (chosen = edited, rejected = original); empty edits are dropped."""
    return [{"id": e["id"], "prompt": e["prompt"], "chosen": e["edited"], "rejected": e["original"],
             "meta": e.get("meta", {})} for e in edits if e["edited"].strip()]
