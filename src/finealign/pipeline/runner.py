"""The recipe runner: plan (check every setting), select stages, run them in order, resume, skip done ones.

Each stage writes into ``RUN_DIR/NAME/``. When it finishes, the runner writes
``RUN_DIR/NAME/.finealign-stage.json`` (the done-marker): the stage's type, its full settings (defaults
included), their fingerprint, the time it took and a summary. On the next run:

* a stage whose marker holds the same fingerprint is skipped;
* a stage whose settings changed (or whose input stage changed, or whose input file's content
  changed) is rerun from scratch: its folder is cleared and the changed settings are printed; the
  stages after it that use its output change fingerprint too, so they rerun as well;
* a stage that was interrupted resumes through its verb's own resume (generate, score, edit, the
  trainers, the evaluations all resume), unless its settings changed since it started
  (``.finealign-started.json``), in which case its partial output is cleared first.

The fingerprint covers the stage's type, settings (paths inside the run folder written relative to
it, so a moved run folder stays valid), the fingerprints of the stages it refers to and the content
hash of its input files. Settings that only affect speed or logging (``batch_size``, ``device``,
``save_every``, ...) are left out (``StageType.volatile``).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, FinealignError
from ..data.run_markers import MARKER, RUN_FILE, STARTED, read_marker
from .recipe import Recipe, StageSpec, bundled_dir, refs_in, resolve, resolve_vars, stage_deps
from .stages import STAGE_TYPES, StageContext, StageType

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".ndjson", ".yaml", ".txt")


@dataclass(frozen=True)
class PlannedStage:
    """A stage ready to run: resolved settings, built config(s), folder, outputs and fingerprint."""

    spec: StageSpec
    type: StageType
    dir: Path
    outputs: dict
    cfg: Any
    extras: Any
    deps: tuple
    settings: dict  # plain settings that make the output (fingerprinted)
    fingerprint: str


@dataclass
class StageOutcome:
    """What happened to one stage: ``status`` is ran | skipped (done before) | incomplete."""

    name: str
    type: str
    status: str
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- planning


def _plain(v, run_dir: Path | None = None):
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name), run_dir) for f in dataclasses.fields(v)}
    if isinstance(v, Path):
        v = str(v)
    if isinstance(v, str) and run_dir is not None:
        v = v.replace(str(run_dir.resolve()), "${run_dir}").replace(str(run_dir), "${run_dir}")
        return v.replace(str(bundled_dir()), "${bundled}")
    if isinstance(v, (list, tuple)):
        return [_plain(x, run_dir) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x, run_dir) for k, x in v.items()}
    return v


def _looks_like_path(v) -> bool:
    if not isinstance(v, str) or not v:
        return False
    base = v.split("[")[0]
    return "/" in base or base.lower().endswith(DATA_SUFFIXES)


def _file_digest(p: Path) -> str:
    if p.is_dir():
        return f"dir:{p.name}"
    size = p.stat().st_size
    if size > 200 * 2**20:
        return f"size:{size}:mtime:{int(p.stat().st_mtime)}"
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def _check_inputs(recipe: Recipe, spec: StageSpec, typ: StageType, resolved: dict, run_dir: Path) -> dict:
    """Literal input files must exist; returns {setting: [content digests]} for the fingerprint."""
    digests = {}
    for key in typ.inputs:
        if key not in resolved or resolved[key] is None:
            continue
        values = resolved[key] if isinstance(resolved[key], list) else [resolved[key]]
        refs = {r.split(".")[1] for r in refs_in(spec.settings.get(key)) if r.startswith("stages.")}
        out = []
        for v in values:
            if not _looks_like_path(v):
                continue
            p = Path(str(v).split("[")[0])
            inside_run = str(p.resolve()).startswith(str(run_dir.resolve()))
            if inside_run or refs:
                continue  # an earlier stage's output: checked when the stage runs
            if not p.exists():
                raise ConfigError(f"{spec.name}.{key}", f"{p}: file not found", where=spec.where(recipe.path, key))
            out.append(_file_digest(p))
        if out:
            digests[key] = out
    return digests


def stage_paths(typ: StageType, stage_dir: Path) -> dict:
    """{output name: path} of a stage whose folder is ``stage_dir`` (``dir`` included)."""
    outs = {k: (stage_dir / v if v else stage_dir) for k, v in typ.outputs.items()}
    outs["dir"] = stage_dir
    return outs


def plan(recipe: Recipe, run_dir: str | Path) -> list[PlannedStage]:
    """Resolve every stage's settings and build its config: all checks before anything runs.

    Raises ``ConfigError`` naming ``file:line`` and ``stage.field`` for a bad value, a missing input
    file or an unset environment variable.
    """
    run_dir = Path(run_dir)
    ctx = resolve_vars(recipe, run_dir)
    ctx["stages"] = {s.name: stage_paths(STAGE_TYPES[s.type], run_dir / s.name) for s in recipe.stages}
    planned: list[PlannedStage] = []
    for spec in recipe.stages:
        typ = STAGE_TYPES[spec.type]
        resolved = {k: resolve(v, ctx, spec.where(recipe.path, k), f"{spec.name}.{k}") for k, v in spec.settings.items()}
        outputs = ctx["stages"][spec.name]
        try:
            cfg, extras = typ.build(resolved, outputs)
        except ConfigError as e:
            key = e.field if e.field in spec.lines else None
            raise ConfigError(f"{spec.name}.{e.field}", e.problem, where=spec.where(recipe.path, key)) from None
        except (FinealignError, TypeError, ValueError) as e:
            key = next((k for k in spec.settings if f"{k}:" in str(e) or f"{k} " in str(e)), None)
            raise ConfigError(spec.name, str(e), where=spec.where(recipe.path, key)) from None
        digests = _check_inputs(recipe, spec, typ, resolved, run_dir)
        deps = [s.name for s in recipe.stages[: spec.index]] if typ.needs_all else stage_deps(spec)
        both = {**(_plain(cfg, run_dir) if cfg is not None else {}),
                **(_plain(extras, run_dir) if extras is not None else {})}
        settings = {k: v for k, v in both.items() if k not in typ.owned and k not in typ.volatile}
        dep_fps = {d: next(p.fingerprint for p in planned if p.spec.name == d) for d in deps}
        blob = json.dumps({"type": typ.name, "settings": settings, "deps": dep_fps, "inputs": digests},
                          sort_keys=True, default=str)
        fp = hashlib.sha256(blob.encode()).hexdigest()[:16]
        planned.append(PlannedStage(spec, typ, run_dir / spec.name, outputs, cfg, extras, tuple(deps), settings, fp))
    return planned


# ---------------------------------------------------------------------------------------------- selection


def select(names: list[str], *, only=(), start: str | None = None, skip=()) -> list[str]:
    """The stages to run, in recipe order: ``only`` these; or ``start`` and every later one; minus ``skip``.

    Names may be comma separated. Raises ``ConfigError`` for an unknown name or ``only`` with ``start``.
    """
    def split(xs):
        return [n.strip() for x in xs for n in str(x).split(",") if n.strip()]

    only, skip = split(only or ()), split(skip or ())
    for n in only + skip + ([start] if start else []):
        if n not in names:
            raise ConfigError("stage", f"no stage named {n!r}; stages: {', '.join(names)}")
    if only and start:
        raise ConfigError("--only", "give --only or --from, not both")
    chosen = list(names)
    if start:
        chosen = names[names.index(start):]
    if only:
        chosen = [n for n in names if n in only]
    return [n for n in chosen if n not in skip]


# ---------------------------------------------------------------------------------------------- state


def stage_state(ps: PlannedStage) -> str:
    """done (same fingerprint) | changed (done with other settings) | partial | partial-changed | new."""
    m = read_marker(ps.dir)
    if m is not None:
        return "done" if m.get("fingerprint") == ps.fingerprint else "changed"
    if ps.dir.exists() and any(ps.dir.iterdir()):
        s = read_marker(ps.dir, STARTED)
        return "partial" if s is None or s.get("fingerprint") == ps.fingerprint else "partial-changed"
    return "new"


def _changes(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _check_deps(planned: list[PlannedStage], chosen: list[str]) -> None:
    """Every stage referred to by a chosen stage runs before it or is already done with its settings."""
    by = {p.spec.name: p for p in planned}
    for p in planned:
        if p.spec.name not in chosen or p.type.needs_all:
            continue
        for d in p.deps:
            if d in chosen:
                continue
            st = stage_state(by[d])
            if st != "done":
                what = "was run with other settings" if st == "changed" else "has not finished"
                raise FinealignError(
                    f"stage {p.spec.name} needs the output of stage {d} ({by[d].outputs['out']}), which {what}; "
                    f"run it first (finealign run RECIPE --only {d}) or include it in the selection")


# ---------------------------------------------------------------------------------------------- running


def _write_run_file(recipe: Recipe, run_dir: Path, planned: list[PlannedStage]) -> None:
    from ..data.io import write_json, write_text_atomic

    prev = read_marker(run_dir, RUN_FILE)
    if prev is not None and prev.get("recipe") != recipe.name:
        raise FinealignError(f"{run_dir} holds a run of recipe {prev.get('recipe')!r}, not {recipe.name!r}; "
                             "give another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "recipe.yaml", recipe.path.read_text(encoding="utf-8"))
    write_json(run_dir / RUN_FILE, {
        "recipe": recipe.name, "description": recipe.description, "recipe_path": str(recipe.path),
        "scale": recipe.scale, "vars": _plain(recipe.vars),
        "stages": [{"name": p.spec.name, "type": p.type.name} for p in planned],
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S")})


def run_stage(ps: PlannedStage, run_dir: Path, *, log: Callable[[str], None], progress, quiet: bool,
              recipe: Recipe) -> StageOutcome:
    """Run one stage (resuming a partial output made with the same settings) and write its marker."""
    from ..data.io import write_json

    ps.dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_json(ps.dir / STARTED, {"fingerprint": ps.fingerprint, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    ctx = StageContext(ps.dir, ps.outputs, run_dir, log, progress, quiet)
    try:
        summary = ps.type.run(ps.cfg, ps.extras, ctx) or {}
    finally:
        gc.collect()  # the stage's models go before the next stage loads its own
    seconds = time.time() - started
    if summary.pop("complete", True) is False:
        log(f"      {ps.spec.name}: not complete ({summary}); rerun to continue")
        return StageOutcome(ps.spec.name, ps.type.name, "incomplete", seconds, summary)
    prev = read_marker(ps.dir, STARTED) or {}
    write_json(ps.dir / MARKER, {
        "stage": ps.spec.name, "type": ps.type.name, "fingerprint": ps.fingerprint, "settings": ps.settings,
        "deps": list(ps.deps), "recipe": recipe.name, "scale": recipe.scale,
        "started_at": prev.get("started_at"), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(seconds, 1), "summary": _plain(summary)})
    return StageOutcome(ps.spec.name, ps.type.name, "ran", seconds, summary)


def run_recipe(recipe: Recipe, run_dir: str | Path, *, only=(), start: str | None = None, skip=(),
               log: Callable[[str], None] = print, progress=None, quiet: bool = False,
               dry_run: bool = False) -> list[StageOutcome]:
    """Plan, check and run the selected stages of ``recipe`` into ``run_dir``; see the module docstring.

    ``progress(label)`` returns an ``on_progress(done, total, info)`` callback for one progress bar (the
    CLI draws them); ``dry_run`` only plans and reports each stage's state. Raises ``ConfigError`` for a
    bad recipe (before anything runs) and ``FinealignError`` for a stage whose input is missing.
    """
    run_dir = Path(run_dir)
    planned = plan(recipe, run_dir)
    chosen = select([p.spec.name for p in planned], only=only, start=start, skip=skip)
    _check_deps(planned, chosen)
    progress = progress or (lambda label: (lambda done, total, info="": None))
    outcomes: list[StageOutcome] = []
    todo = [p for p in planned if p.spec.name in chosen]
    if not dry_run:
        _write_run_file(recipe, run_dir, planned)
    for i, ps in enumerate(todo, 1):
        head = f"[{i}/{len(todo)}] {ps.spec.name} ({ps.type.name})"
        state = stage_state(ps)
        if dry_run:
            log(f"{head}: {state} -> {ps.outputs['out']}")
            outcomes.append(StageOutcome(ps.spec.name, ps.type.name, state))
            continue
        if state == "done":
            log(f"{head}: done before, skipped -> {ps.outputs['out']}")
            m = read_marker(ps.dir) or {}
            outcomes.append(StageOutcome(ps.spec.name, ps.type.name, "skipped", 0.0, m.get("summary") or {}))
            continue
        if state in ("changed", "partial-changed"):
            old = (read_marker(ps.dir) or {}).get("settings") or {}
            diff = _changes(old, ps.settings) if old else []
            why = "; ".join(diff) if diff else "an input stage or input file changed"
            log(f"{head}: settings changed since the last run ({why}); rerunning from scratch")
            shutil.rmtree(ps.dir)
        elif state == "partial":
            log(f"{head}: resuming the unfinished run in {ps.dir}")
        else:
            log(f"{head}: running -> {ps.outputs['out']}")
        out = run_stage(ps, run_dir, log=log, progress=progress, quiet=quiet, recipe=recipe)
        if out.status == "ran":
            log(f"      done in {out.seconds:.1f} s")
        outcomes.append(out)
        if out.status == "incomplete":
            break
    return outcomes
