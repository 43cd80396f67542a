"""The stage types a recipe may use: each runs the same library function as its verb.

| type | verb | settings (dataclass) | main output (``${stages.NAME.out}``) |
|---|---|---|---|
| ``generate`` | ``finealign generate`` | :class:`~.configs.GenerateStage` | ``responses.jsonl`` |
| ``score`` | ``finealign score`` | :class:`~.configs.ScoreStage` | ``scored.jsonl`` |
| ``label`` | ``finealign label`` | :class:`~.configs.LabelInputs` + ``train.labeling.LabelConfig`` | ``labels.jsonl`` |
| ``edit`` | ``finealign edit`` | :class:`~.configs.EditStage` | ``edits.jsonl`` |
| ``train-dpo`` / ``train-kto`` | ``finealign train dpo|kto`` | ``train.preference.PrefTrainConfig`` | the folder (model) |
| ``train-followup-sft`` | ``finealign train followup-sft`` | ``train.followup_sft.FollowupSFTConfig`` | the folder |
| ``train-token-rm`` | ``finealign train token-rm`` | ``train.token_rm.TokenRMConfig`` | the folder (model) |
| ``train-ppo`` | ``finealign train ppo`` | ``train.ppo_config.PPOConfig`` | the folder; ``policy``: ``policy/`` |
| ``eval-rm`` | ``finealign eval rm`` | ``eval.rm_eval.EvalConfig`` + :class:`~.configs.EngineStage` | the folder |
| ``eval-winrate`` | ``finealign eval winrate`` | ``eval.winrate.WinrateConfig`` + ``limit`` | the folder |
| ``report`` | ``finealign report`` | :class:`~.configs.ReportStage` | ``report.html`` |

A stage's ``out`` (and DPO/KTO's ``method``) is set by the runner: outputs go to ``RUN_DIR/NAME/``.
``generate``, ``score``, ``label`` and ``eval-rm`` take the verbs' ``engine`` / ``ray_address`` /
``workers`` / ``shard_size`` (``engine: ray`` runs them sharded on Ray workers, byte-identical output;
these settings are marked ``identity=False``, so switching engine resumes the same stage).
Type names may be written with a space (``train dpo``, ``eval winrate``) as on the command line.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import FinealignError
from . import configs as C


@dataclass
class StageContext:
    """What a stage's run function gets besides its settings: its folder and outputs, the run folder,
    ``log(message)``, ``progress(label)`` -> an ``on_progress(done, total, info)`` callback, ``quiet``."""

    dir: Path
    outputs: dict
    run_dir: Path
    log: Callable[[str], None]
    progress: Callable[[str], Callable[[int, int, str], None]]
    quiet: bool = False


@dataclass(frozen=True)
class StageType:
    """One kind of stage.

    ``config``: the verb's own settings dataclass (None: settings are ``extras`` only); ``extras``: a
    dataclass of settings the verb takes beside ``config``; ``owned``: config fields the runner sets
    ({field: why}); ``outputs``: {name: path inside the stage folder, "" = the folder}, ``out`` first;
    ``needs_all``: depends on every earlier stage (the report). Which settings make the output and which
    name inputs (fingerprinted by content) is marked on the settings' fields (``data.identity``).
    """

    name: str
    run: Callable[[Any, Any, StageContext], dict]
    config: type | None = None
    extras: type | None = None
    owned: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=lambda: {"out": ""})
    needs_all: bool = False

    def _fields(self, cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init] if cls is not None else []

    def setting_names(self) -> list[str]:
        """Every key a recipe may set for this type."""
        return [n for n in self._fields(self.config) if n not in self.owned and n not in self.fixed] + \
            [n for n in self._fields(self.extras) if n not in self._fields(self.config)]

    def output_names(self) -> list[str]:
        return list(self.outputs) + ["dir"]

    def build(self, settings: dict, outputs: dict) -> tuple[Any, Any]:
        """``(config, extras)`` from resolved settings; the config's owned fields point at ``outputs``.
        Raises the config's own ``ConfigError`` / ``FinealignError``."""
        cfields = set(self._fields(self.config))
        extras = None
        if self.extras is not None:
            ex = {k: v for k, v in settings.items() if k in set(self._fields(self.extras)) - cfields}
            extras = self.extras(**ex)
        if self.config is None:
            return None, extras
        values = {k: v for k, v in settings.items() if k in cfields}
        hints = _hints(self.config)
        if "out" in self.owned and "out" in cfields:  # the other owned fields keep their defaults
            values["out"] = Path(outputs["out"]) if "Path" in str(hints.get("out", "")) else str(outputs["out"])
        values.update(self.fixed)
        return self.config(**values), extras


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolvable annotations: treat as strings
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _limited_prompts(path: str | Path, limit: int | None, folder: Path) -> Path:
    """``path`` itself, or its first ``limit`` prompts written to ``folder/prompts.jsonl``."""
    if not limit:
        return Path(path)
    from ..data.io import write_jsonl
    from ..data.prompts import read_prompts

    items = read_prompts(path)[:limit]
    return write_jsonl(folder / "prompts.jsonl", [{"id": p.id, "prompt": p.prompt} for p in items])


def _counter(ctx: StageContext, label: str):
    """(on_total(n), on_advance(n)) callbacks over ``ctx.progress`` for the count-style verbs."""
    cb = ctx.progress(label)
    state = {"done": 0, "total": 0}

    def on_total(n):
        state["total"] = n or 0
        cb(state["done"], state["total"], "")

    def on_advance(n):
        state["done"] += n
        cb(state["done"], max(state["total"], state["done"]), "")

    return on_total, on_advance


def _engine(cfg):
    """The ``EngineArgs`` part of a stage's settings (``engine: ray`` and its options)."""
    from ..config import part
    from ..engine.shards import EngineArgs

    return part(cfg, EngineArgs)


def _shard_log(ctx: StageContext):
    """An ``on_event`` of the sharded runs logging every failed shard (the others go on)."""
    return lambda kind, info: ctx.log(f"shard {info['shard']} failed: {info['message']}") if kind == "failed" else None


# ---------------------------------------------------------------------------------------------- run functions


def run_generate(cfg: C.GenerateStage, _, ctx: StageContext) -> dict:
    """``generation.generate_file`` on the first ``limit`` prompts; returns its counts."""
    from ..generation import generate_file

    prompts = _limited_prompts(cfg.prompts, cfg.limit, ctx.dir)
    kw = dict(k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
              batch_size=cfg.batch_size, dtype=cfg.dtype, device=cfg.device, on_progress=ctx.progress("generate"))
    if cfg.engine == "ray":
        from ..engine.sharded import generate_file_sharded

        st = generate_file_sharded(cfg.model, prompts, ctx.outputs["out"], engine=_engine(cfg),
                                   on_event=_shard_log(ctx), **kw)
    else:
        st = generate_file(cfg.model, prompts, ctx.outputs["out"], **kw)
    return {"prompts": st.prompts, "responses_written": st.responses_written, "skipped": st.skipped,
            "empty": st.empty, "truncated": st.truncated, "tokens_per_s": round(st.tokens_per_s, 1)}


def run_score(cfg: C.ScoreStage, _, ctx: StageContext) -> dict:
    """``rewards.score_file.score_file``; returns its counts."""
    from ..rewards.score_file import score_file

    if cfg.engine == "ray":
        from ..engine.sharded import score_file_sharded

        return score_file_sharded(cfg.scorer, Path(cfg.input), ctx.outputs["out"], chunk=cfg.chunk,
                                  engine=_engine(cfg), on_progress=ctx.progress("score"), on_event=_shard_log(ctx))
    return score_file(cfg.scorer, Path(cfg.input), ctx.outputs["out"], chunk=cfg.chunk,
                      on_progress=ctx.progress("score"))


SCORE_CACHE = ".score-cache"  # RUN_DIR/.score-cache/: scores shared by stages with the same scorer


def run_label(cfg, ex: C.LabelInputs, ctx: StageContext) -> dict:
    """``train.labeling.label_file``; raises ``FinealignError`` when no pair / label survives. Label stages
    of one run with the same scorer share one score cache (``RUN_DIR/.score-cache/``): the second labeling
    of the same responses (``label-dpo`` then ``label-kto``) scores nothing and loads no model."""
    from ..train.labeling import label_file

    if ex.engine == "ray":
        from ..engine.sharded import label_file_sharded

        st = label_file_sharded(ex.scorer, ex.input, ctx.outputs["out"], cfg, engine=_engine(ex),
                                on_progress=ctx.progress("label"), on_event=_shard_log(ctx))
    else:
        from ..rewards.cache import shared_cache_path

        on_total, on_advance = _counter(ctx, "label")
        cache = shared_cache_path(ctx.run_dir / SCORE_CACHE, ex.scorer)  # shared by the run's labelings
        st = label_file(ex.scorer, ex.input, ctx.outputs["out"], cfg, on_total=on_total, on_progress=on_advance,
                        cache=cache)
    if not st.written:
        raise FinealignError(f"label: no {'pairs' if cfg.format == 'dpo' else 'labels'} written from {ex.input} "
                             f"(dropped: {dict(st.dropped)}); more prompts or samples per prompt may help")
    return {"prompts": st.prompts, "responses": st.responses, "written": st.written, "dropped": dict(st.dropped)}


def run_edit(cfg: C.EditStage, _, ctx: StageContext) -> dict:
    """``edits.run.run_edits`` with the editor of ``cfg``; incomplete while some edits failed (a rerun retries)."""
    from ..edits.editors import make_editor
    from ..edits.minimality import MinimalityConfig
    from ..edits.run import EditJobConfig, read_edit_inputs, run_edits
    from ..edits.template import get_template

    try:
        job = EditJobConfig(MinimalityConfig(cfg.max_ratio, cfg.on_violation), cfg.limit)
    except ValueError as e:
        raise FinealignError(str(e)) from None
    read_edit_inputs(cfg.input)  # validate the whole input before loading any model
    ed = make_editor(cfg.editor, template=get_template(cfg.template), base_url=cfg.base_url,
                     concurrency=cfg.concurrency, retries=cfg.retries, timeout=cfg.timeout, backoff=cfg.backoff,
                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                     dtype=cfg.dtype, device=cfg.device)
    try:
        stats = run_edits(ed, cfg.input, ctx.outputs["out"], job, on_progress=ctx.progress("edit"))
    finally:
        ed.close()
    d = stats.to_dict()
    if d.get("failed"):
        return {**d, "complete": False}  # failures are retried by the next run
    return d


def _train_summary(res, ctx: StageContext) -> dict:
    """A trainer's ``TrainResult`` (``train.run_state``) as a stage summary; not complete before its last step."""
    metrics = {k: v for k, v in (res.metrics or {}).items() if isinstance(v, (int, float, str)) or v is None}
    return {"steps": res.steps, "metrics": metrics, **(res.details or {}), "complete": bool(res.finished)}


def _step_progress(ctx: StageContext, label: str, keys: tuple[str, ...]):
    """An ``on_step(step, total, metrics)`` callback drawing one progress bar with a few metrics."""
    cb = ctx.progress(label)

    def on_step(step, total, m):
        m = m or {}
        cb(step, total, " ".join(f"{k} {m[k]:.3f}" for k in keys if isinstance(m.get(k), (int, float))))

    return on_step


def run_pref(cfg, _, ctx: StageContext) -> dict:
    """``train.preference.train_preference`` (DPO or KTO, ``cfg.method`` set by the stage type)."""
    from ..train.preference import train_preference

    return _train_summary(train_preference(cfg, on_step=_step_progress(ctx, cfg.method, ("loss",))), ctx)


def run_followup(cfg, _, ctx: StageContext) -> dict:
    """``train.followup_sft.train_followup``."""
    from ..train.followup_sft import train_followup

    return _train_summary(train_followup(cfg, on_step=_step_progress(ctx, "followup-sft", ("loss",))), ctx)


def run_token_rm(cfg, _, ctx: StageContext) -> dict:
    """``train.token_rm.train_token_rm``; incomplete before its last step."""
    from ..train.token_rm import train_token_rm

    res = train_token_rm(cfg, on_step=_step_progress(ctx, "token-rm", ("loss",)), log=ctx.log)
    return _train_summary(res, ctx)


def run_ppo(cfg, _, ctx: StageContext) -> dict:
    """``train.ppo.train_ppo``; incomplete before its last step."""
    from ..train.ppo import train_ppo

    res = train_ppo(cfg, on_step=_step_progress(ctx, f"ppo ({cfg.granularity})", ("score", "kl")), log=ctx.log)
    return _train_summary(res, ctx)


def run_eval_rm(cfg, ex: C.EngineStage, ctx: StageContext) -> dict:
    """``eval.rm_eval.run_eval``; returns the overall metrics of the scorer and of the length baseline."""
    from ..eval.rm_eval import run_eval

    if ex is not None and ex.engine == "ray":
        from ..engine.sharded import run_eval_sharded

        res = run_eval_sharded(cfg, engine=_engine(ex), on_progress=ctx.progress("eval-rm"), on_event=_shard_log(ctx))
    else:
        on_total, on_advance = _counter(ctx, "eval-rm")
        res = run_eval(cfg, on_total=on_total, on_progress=on_advance)
    return {"benchmark": res.bench.name, "scorer": res.scorer.get("overall"), "length": res.length.get("overall")}


def run_winrate(cfg, ex: C.WinrateInputs, ctx: StageContext) -> dict:
    """``eval.winrate.run_winrate`` on the first ``limit`` prompts; returns the headline of ``results.json``. The
    judge check's verdicts are shared by the run's win-rate stages with the same judge (``RUN_DIR/.score-cache/``)."""
    from ..eval.winrate import run_winrate as _run

    if ex is not None and ex.limit and cfg.prompts is not None:
        cfg = dataclasses.replace(cfg, prompts=_limited_prompts(cfg.prompts, ex.limit, ctx.dir))
    bars: dict = {}

    def on_progress(stage, done, total):
        if stage not in bars:
            bars[stage] = ctx.progress(stage)
        bars[stage](done, total, "")

    shared = None if cfg.judge_check.strip().lower() == "none" else _judge_check_cache(ctx.run_dir / SCORE_CACHE,
                                                                                        cfg.judge)
    _run(cfg, on_progress=on_progress, check_cache=shared)  # the run's win rates judge the check once
    import json

    d = json.loads((Path(cfg.out) / "results.json").read_text(encoding="utf-8"))
    keep = ("win_rate", "win_rate_ci", "lc_win_rate", "lc_status", "judge_paths", "n", "ties", "warning", "lc_warning")
    summary = {k: d.get(k) for k in keep if k in d}
    for w in (d.get("warning"), d.get("lc_warning")):
        if w:
            ctx.log(f"warning: {w}")
    return summary


def _judge_check_cache(folder: Path, judge: str) -> Path:
    """The verdict cache that a run's win-rate stages with the same judge share for the judge check (the check
    is judged once, not once per stage): named by a hash of the judge's key (``judges.judge_key``) and the
    fingerprint of its local model, so a changed model starts a fresh file. Verdicts inside are keyed by
    judge identity, template and texts (``judge_orders``), so only equal comparisons are shared."""
    import hashlib
    import json

    from ..eval.judges import judge_key
    from ..models.fingerprint import model_fingerprint
    from ..rewards.base import parse_spec, scorer_fingerprint

    s = parse_spec(judge)
    fp = (model_fingerprint(s.arg) if s.kind == "pairwise" and s.arg else {} if s.kind == "openai"
          else scorer_fingerprint(judge))
    ident = json.dumps({"judge": judge_key(judge), "fingerprint": fp}, sort_keys=True, default=str)
    return folder / f"judge-check-{hashlib.sha256(ident.encode('utf-8')).hexdigest()[:16]}.jsonl"


def run_report(cfg: C.ReportStage, _, ctx: StageContext) -> dict:
    """``report.build.build_report`` over this run folder."""
    from ..report.build import build_report

    path = build_report([ctx.run_dir], ctx.outputs["out"], title=cfg.title, samples=cfg.samples,
                        heatmap=cfg.heatmap, max_chars=cfg.max_chars, log=ctx.log)
    return {"report": str(path)}


# ---------------------------------------------------------------------------------------------- registry


def _registry() -> dict[str, StageType]:
    from ..eval.rm_eval import EvalConfig
    from ..eval.winrate import WinrateConfig
    from ..train.followup_sft import FollowupSFTConfig
    from ..train.labeling import LabelConfig
    from ..train.ppo_config import PPOConfig
    from ..train.preference import PrefTrainConfig
    from ..train.token_rm import TokenRMConfig

    runner_out = {"out": "the stage's folder, RUN_DIR/NAME",
                  "overwrite": "the runner clears a stage whose settings changed", "quiet": "give --quiet to the runner"}
    method = {"method": "given by the stage type"}
    types = [
        StageType("generate", run_generate, config=C.GenerateStage, outputs={"out": "responses.jsonl"}),
        StageType("score", run_score, config=C.ScoreStage, outputs={"out": "scored.jsonl"}),
        StageType("label", run_label, config=LabelConfig, extras=C.LabelInputs, outputs={"out": "labels.jsonl"}),
        StageType("edit", run_edit, config=C.EditStage, outputs={"out": "edits.jsonl"}),
        StageType("train-dpo", run_pref, config=PrefTrainConfig, owned={**runner_out, **method},
                  fixed={"method": "dpo"}),
        StageType("train-kto", run_pref, config=PrefTrainConfig, owned={**runner_out, **method},
                  fixed={"method": "kto"}),
        StageType("train-followup-sft", run_followup, config=FollowupSFTConfig, owned=runner_out),
        StageType("train-token-rm", run_token_rm, config=TokenRMConfig, owned=runner_out),
        StageType("train-ppo", run_ppo, config=PPOConfig, owned=runner_out, outputs={"out": "", "policy": "policy"}),
        StageType("eval-rm", run_eval_rm, config=EvalConfig, extras=C.EngineStage, owned=runner_out),
        StageType("eval-winrate", run_winrate, config=WinrateConfig, extras=C.WinrateInputs, owned=runner_out),
        StageType("report", run_report, config=C.ReportStage, outputs={"out": "report.html"}, needs_all=True),
    ]
    return {t.name: t for t in types}


class _LazyTypes(dict):
    """The registry, built on first use (it imports the verbs' config modules)."""

    def _fill(self):
        if not super().__len__():
            self.update(_registry())

    def __getitem__(self, k):
        self._fill()
        return super().__getitem__(k)

    def __contains__(self, k):
        self._fill()
        return super().__contains__(k)

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self):
        self._fill()
        return super().__len__()

    def keys(self):
        self._fill()
        return super().keys()

    def items(self):
        self._fill()
        return super().items()


STAGE_TYPES: dict[str, StageType] = _LazyTypes()


def normalize_type(name: str) -> str:
    """``train dpo`` / ``train_dpo`` / ``eval winrate`` -> ``train-dpo`` / ``eval-winrate``."""
    return "-".join(name.strip().lower().replace("_", " ").split())
