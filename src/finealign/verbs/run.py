"""The verbs' run functions, with one progress-callback shape, and the one local/engine dispatch.

Every verb runs as ``run(cfg, hooks) -> result``: ``cfg`` is the verb's settings dataclass
(:mod:`finealign.verbs.settings` or the library's config), ``hooks`` a :class:`Hooks` (progress bars,
log lines, the run's shared cache folder). The command line (``cli/``) prints the result; a recipe stage
(``pipeline/stages.py``) turns it into its summary with the row's ``summary``. An engine-capable verb
has two run functions, ``local`` and ``sharded``; :func:`dispatch` picks one by the settings' ``engine``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import FinealignError

ProgressFn = Callable[[int, int, str], None]  # on_progress(done, total, info)
SCORE_CACHE = ".score-cache"  # RUN_DIR/.score-cache/: scores shared by a run's stages with the same scorer


def _no_progress(label: str) -> ProgressFn:
    return lambda done, total, info="": None


@dataclass
class Hooks:
    """What a verb's run function gets besides its settings.

    ``progress(label)``: an ``on_progress(done, total, info)`` callback drawing one bar; ``log(message)``: a
    status line; ``shared``: a folder the stages of one run share (score caches; None on the command line:
    each output keeps its own cache); ``steps``: also log one status line per trainer logging step."""

    progress: Callable[[str], ProgressFn] = _no_progress
    log: Callable[[str], None] = lambda message: None
    shared: Path | None = None
    steps: bool = False


def dispatch(verb, cfg, hooks: Hooks):
    """Run ``verb`` (a :class:`~finealign.verbs.Verb`) on ``cfg``: its ``sharded`` function on the engine the
    settings name (``engine: ray``), else its ``local`` one. The only place the engine is chosen."""
    if verb.sharded is not None and getattr(cfg, "engine", "local") == "ray":
        from ..config import part
        from ..config import EngineArgs

        def on_event(kind: str, info: dict) -> None:  # a failed shard is logged; the others go on
            if kind == "failed":
                hooks.log(f"shard {info['shard']} failed: {info['message']}")

        return verb.sharded(cfg, hooks, part(cfg, EngineArgs), on_event)
    return verb.local(cfg, hooks)


def _counter(hooks: Hooks, label: str):
    """(on_total(n), on_advance(n)) callbacks over ``hooks.progress(label)`` for the count-style functions."""
    cb = hooks.progress(label)
    state = {"done": 0, "total": 0}

    def on_total(n):
        state["total"] = n or 0
        cb(state["done"], state["total"], "")

    def on_advance(n):
        state["done"] += n
        cb(state["done"], max(state["total"], state["done"]), "")

    return on_total, on_advance


# ---------------------------------------------------------------------------------------------- generate


def _sampling(cfg) -> dict:
    return dict(k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)


def generate_local(cfg, hooks: Hooks):
    """``generation.generate_file`` (or ``generation_vllm.vllm_generate_file``); ``GenerateStats``."""
    on_progress = hooks.progress("generate")
    if cfg.backend == "vllm":
        from ..generation_vllm import vllm_generate_file

        return vllm_generate_file(cfg.model, Path(cfg.prompts), Path(cfg.out), **_sampling(cfg), dtype=cfg.dtype,
                                  on_progress=on_progress, overwrite=cfg.overwrite)
    from .. import generation

    return generation.generate_file(cfg.model, Path(cfg.prompts), Path(cfg.out), **_sampling(cfg),
                                    batch_size=cfg.batch_size, dtype=cfg.dtype, device=cfg.device,
                                    on_progress=on_progress, overwrite=cfg.overwrite)


def generate_sharded(cfg, hooks: Hooks, engine, on_event):
    """``engine.sharded.generate_file_sharded``: the same lines, sampled by the engine's workers."""
    from ..engine.sharded import generate_file_sharded

    return generate_file_sharded(cfg.model, Path(cfg.prompts), Path(cfg.out), **_sampling(cfg),
                                 batch_size=cfg.batch_size, dtype=cfg.dtype, device=cfg.device, engine=engine,
                                 on_progress=hooks.progress("generate"), on_event=on_event, overwrite=cfg.overwrite)


def generate_summary(st, cfg, hooks: Hooks) -> dict:
    return {"prompts": st.prompts, "responses_written": st.responses_written, "skipped": st.skipped,
            "empty": st.empty, "truncated": st.truncated, "tokens_per_s": round(st.tokens_per_s, 1)}


# ---------------------------------------------------------------------------------------------- score, label


def score_local(cfg, hooks: Hooks) -> dict:
    """``rewards.score_file.score_file``; its counts."""
    from ..rewards.score_file import score_file

    return score_file(cfg.scorer_spec(), Path(cfg.input), Path(cfg.out), chunk=cfg.chunk,
                      on_progress=hooks.progress("score"), overwrite=cfg.overwrite, max_chars=cfg.max_chars)


def score_sharded(cfg, hooks: Hooks, engine, on_event) -> dict:
    from ..engine.sharded import score_file_sharded

    return score_file_sharded(cfg.scorer_spec(), Path(cfg.input), Path(cfg.out), chunk=cfg.chunk, engine=engine,
                              on_progress=hooks.progress("score"), on_event=on_event, overwrite=cfg.overwrite,
                              max_chars=cfg.max_chars)


def label_local(cfg, hooks: Hooks):
    """``train.labeling.label_file``; its ``LabelStats``. With ``hooks.shared`` the labelings of one run with
    the same scorer share one score cache (``RUN_DIR/.score-cache/``): the second labeling of the same
    responses (``label-dpo`` then ``label-kto``) scores nothing and loads no model."""
    from ..config import part
    from ..train.labeling import LabelConfig, label_file

    cache = None
    if hooks.shared is not None:
        from ..rewards.cache import shared_cache_path

        cache = shared_cache_path(hooks.shared / SCORE_CACHE, cfg.scorer)
    on_total, on_advance = _counter(hooks, "label")
    return label_file(cfg.scorer, cfg.input, cfg.out, part(cfg, LabelConfig), on_total=on_total,
                      on_progress=on_advance, overwrite=cfg.overwrite, cache=cache)


def label_sharded(cfg, hooks: Hooks, engine, on_event):
    from ..config import part
    from ..engine.sharded import label_file_sharded
    from ..train.labeling import LabelConfig

    return label_file_sharded(cfg.scorer, cfg.input, cfg.out, part(cfg, LabelConfig), engine=engine,
                              on_progress=hooks.progress("label"), on_event=on_event, overwrite=cfg.overwrite)


def label_summary(st, cfg, hooks: Hooks) -> dict:
    """The stage's counts; raises ``FinealignError`` when no pair / label survives."""
    if not st.written:
        raise FinealignError(f"label: no {'pairs' if cfg.format == 'dpo' else 'labels'} written from {cfg.input} "
                             f"(dropped: {dict(st.dropped)}); more prompts or samples per prompt may help")
    return {"prompts": st.prompts, "responses": st.responses, "written": st.written, "dropped": dict(st.dropped)}


# ---------------------------------------------------------------------------------------------- edit


def edit_local(cfg, hooks: Hooks):
    """``edits.run.run_edits`` with the editor of ``cfg``; its ``EditStats``. The whole input is validated
    before any model loads."""
    from ..edits.editors import make_editor
    from ..edits.minimality import MinimalityConfig
    from ..edits.run import EditJobConfig, read_edit_inputs, run_edits
    from ..edits.template import get_template

    try:
        job = EditJobConfig(MinimalityConfig(cfg.max_ratio, cfg.on_violation), cfg.limit, cfg.overwrite)
    except ValueError as e:
        raise FinealignError(str(e)) from None
    read_edit_inputs(cfg.input)
    ed = make_editor(cfg.editor, template=get_template(cfg.template), base_url=cfg.base_url, concurrency=cfg.concurrency,
                     retries=cfg.retries, timeout=cfg.timeout, backoff=cfg.backoff, temperature=cfg.temperature,
                     max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, dtype=cfg.dtype, device=cfg.device)
    try:
        return run_edits(ed, cfg.input, cfg.out, job, on_progress=hooks.progress("edit"))
    finally:
        ed.close()


def edit_summary(stats, cfg, hooks: Hooks) -> dict:
    """The edit counts; incomplete while some edits failed (a rerun retries them)."""
    d = stats.to_dict()
    return {**d, "complete": False} if d.get("failed") else d


# ---------------------------------------------------------------------------------------------- trainers


def _step_info(m: dict | None, keys: tuple[str, ...]) -> str:
    m = m or {}
    parts = [f"{k} {m[k]:.3f}" for k in keys if isinstance(m.get(k), (int, float))]
    if isinstance(m.get("tokens_per_s"), (int, float)):
        parts.append(f"{m['tokens_per_s']:,.0f} tok/s")
    return " ".join(parts)


def _on_step(hooks: Hooks, label: str, keys: tuple[str, ...]):
    """An ``on_step(step, total, metrics)`` of a trainer drawing ``hooks.progress(label)`` with a few metrics."""
    cb = hooks.progress(label)
    return lambda step, total, m: cb(step, total, _step_info(m, keys))


def pref_local(cfg, hooks: Hooks):
    """``train.preference.train_preference`` (DPO or KTO by ``cfg.method``); its ``TrainResult``."""
    from ..train.preference import train_preference

    def on_log(step: int, logs: dict) -> None:  # one short status line per logging step
        keys = ("loss", "rewards/accuracies", "rewards/margins", "kl")
        shown = "  ".join(f"{k} {logs[k]:.4g}" for k in keys if isinstance(logs.get(k), (int, float)))
        if shown:
            hooks.log(f"step {step}: {shown}")

    return train_preference(cfg, on_log=on_log if hooks.steps else None,
                            on_step=_on_step(hooks, cfg.method, ("loss",)))


def followup_local(cfg, hooks: Hooks):
    """``train.followup_sft.train_followup``; its ``TrainResult``."""
    from ..train.followup_sft import train_followup

    return train_followup(cfg, on_step=_on_step(hooks, "followup-sft", ("loss",)))


def token_rm_local(cfg, hooks: Hooks):
    """``train.token_rm.train_token_rm``; its ``TrainResult``."""
    from ..train.token_rm import train_token_rm

    return train_token_rm(cfg, on_step=_on_step(hooks, f"token-rm {cfg.loss}", ("loss",)), log=hooks.log)


def ppo_local(cfg, hooks: Hooks):
    """``train.ppo.train_ppo``; its ``TrainResult``."""
    from ..train.ppo import train_ppo

    return train_ppo(cfg, on_step=_on_step(hooks, f"ppo ({cfg.granularity})", ("score", "kl")), log=hooks.log)


def train_summary(res, cfg, hooks: Hooks) -> dict:
    """A trainer's ``TrainResult`` (``train.run_state``) as a stage summary; not complete before its last step."""
    metrics = {k: v for k, v in (res.metrics or {}).items() if isinstance(v, (int, float, str)) or v is None}
    return {"steps": res.steps, "metrics": metrics, **(res.details or {}), "complete": bool(res.finished)}


# ---------------------------------------------------------------------------------------------- eval, report


def eval_rm_local(cfg, hooks: Hooks):
    """``eval.rm_eval.run_eval``; its ``EvalResult``."""
    from ..config import part
    from ..eval.rm_eval import EvalConfig, run_eval

    on_total, on_advance = _counter(hooks, "eval-rm")
    return run_eval(part(cfg, EvalConfig), on_total=on_total, on_progress=on_advance)


def eval_rm_sharded(cfg, hooks: Hooks, engine, on_event):
    from ..config import part
    from ..engine.sharded import run_eval_sharded
    from ..eval.rm_eval import EvalConfig

    return run_eval_sharded(part(cfg, EvalConfig), engine=engine, on_progress=hooks.progress("eval-rm"),
                            on_event=on_event)


def eval_rm_summary(res, cfg, hooks: Hooks) -> dict:
    return {"benchmark": res.bench.name, "scorer": res.scorer.get("overall"), "length": res.length.get("overall")}


WINRATE_STEPS = {"generate-model": "generate (model)", "generate-reference": "generate (reference)",
                 "judge-check": "judge check", "judge": "judge"}


def winrate_local(cfg, hooks: Hooks):
    """``eval.winrate.run_winrate``; its result. With ``hooks.shared`` the judge check's verdicts are shared by
    the run's win-rate stages with the same judge (the check is judged once)."""
    from ..eval.winrate import run_winrate

    bars: dict = {}

    def on_progress(step: str, done: int, total: int) -> None:
        if step not in bars:
            bars[step] = hooks.progress(WINRATE_STEPS.get(step, step))
        bars[step](done, total, "")

    shared = None
    if hooks.shared is not None and cfg.judge_check.strip().lower() != "none":
        shared = _judge_check_cache(hooks.shared / SCORE_CACHE, cfg.judge)
    return run_winrate(cfg, on_progress=on_progress, check_cache=shared)


def _judge_check_cache(folder: Path, judge: str) -> Path:
    """The verdict cache that a run's win-rate stages with the same judge share for the judge check: named by
    a hash of the judge's key (``judges.judge_key``) and the fingerprint of its local model, so a changed
    model starts a fresh file. Verdicts inside are keyed by judge identity, template and texts."""
    import hashlib

    from ..rewards.inputs import judge_key
    from ..models.fingerprint import model_fingerprint
    from ..rewards.base import parse_spec, scorer_fingerprint

    s = parse_spec(judge)
    fp = (model_fingerprint(s.arg) if s.kind == "pairwise" and s.arg else {} if s.kind == "openai"
          else scorer_fingerprint(judge))
    ident = json.dumps({"judge": judge_key(judge), "fingerprint": fp}, sort_keys=True, default=str)
    return folder / f"judge-check-{hashlib.sha256(ident.encode('utf-8')).hexdigest()[:16]}.jsonl"


def winrate_summary(res, cfg, hooks: Hooks) -> dict:
    """The headline of ``results.json``; its warnings are logged."""
    d = json.loads((Path(cfg.out) / "results.json").read_text(encoding="utf-8"))
    keep = ("win_rate", "win_rate_ci", "lc_win_rate", "lc_status", "judge_paths", "n", "ties", "warning", "lc_warning")
    for w in (d.get("warning"), d.get("lc_warning")):
        if w:
            hooks.log(f"warning: {w}")
    return {k: d.get(k) for k in keep if k in d}


def report_local(cfg, hooks: Hooks) -> Path:
    """``report.build.build_report`` over ``cfg.run_dirs``; the page's path (default ``RUN_DIR/report.html``)."""
    from ..report.build import build_report

    run_dirs = [Path(d) for d in cfg.run_dirs]
    return build_report(run_dirs, Path(cfg.out) if cfg.out else run_dirs[0] / "report.html", title=cfg.title,
                        samples=cfg.samples, heatmap=cfg.heatmap, max_chars=cfg.max_chars, log=hooks.log)


def report_summary(path, cfg, hooks: Hooks) -> dict:
    return {"report": str(path)}


def plain_summary(result: dict, cfg, hooks: Hooks) -> dict:
    """A result that is already a dict of counts (``score``)."""
    return dict(result)


# ---------------------------------------------------------------------------------------------- sim study


def sim_study_local(cfg, hooks: Hooks) -> dict:
    """``studies.sim_study.run_sim_study``: the study's dict (what OUT/study.json holds)."""
    from ..studies.sim_study import run_sim_study

    return run_sim_study(cfg)


def sim_study_summary(result: dict, cfg, hooks: Hooks) -> dict:
    """Each task's sequence/token steps-to-target ratio per reward (``steps_ratio``: ratio and interval), and
    the study's seconds."""
    ratios = {t: {r: {"ratio": v.get("ratio"), "ci": v.get("ci")} for r, v in (by.get("steps_ratio") or {}).items()}
              for t, by in (result.get("ppo") or {}).items()}
    return {"study": str(Path(cfg.out) / "study.json"), "steps_ratio": ratios, "seconds": result.get("seconds", {})}
