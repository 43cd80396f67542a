"""The recipe runner: plan (check every setting), select stages, run them in order, resume, skip done ones.

Each stage writes into ``RUN_DIR/NAME/``. When it finishes, the runner writes
``RUN_DIR/NAME/.finealign-stage.json`` (the done-marker): the stage's type, its identity (settings and
input fingerprints, ``data.identity``), their fingerprint, the time it took and a summary. On the next run:

* a stage whose marker holds the same fingerprint is skipped;
* a stage whose settings changed (or whose input stage changed, or the content of an input file or
  model folder it reads) is rerun from scratch: its folder is cleared and what changed is printed
  (``input prompts: ... (fingerprint a) -> ... (fingerprint b)``); the stages after it that use its
  output change fingerprint too, so they rerun as well;
* a finished stage whose only change is a larger ``grows`` setting (a trainer's ``steps``) or a
  ``derived`` one resumes in place: the trainer extends its run, as on the command line;
* a stage that was interrupted resumes through its verb's own resume (generate, score, edit, the
  trainers, the evaluations all resume), unless its settings changed since it started
  (``.finealign-started.json``), in which case its partial output is cleared first.

The fingerprint covers the stage's type, its identity settings (paths inside the run folder written
relative to it, so a moved run folder stays valid), the fingerprints of the stages it refers to and the
content fingerprints of the files and models it reads. Settings marked ``identity=False`` on their
dataclass field (``batch_size``, ``device``, ``save_every``, the engine, ...) are left out.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import re
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
    """A stage ready to run: resolved settings, built config(s), folder, outputs and fingerprints.

    ``settings``/``inputs``: the identity fields and input fingerprints (``data.identity``) that make
    ``base``; ``resumable``: the ``grows``/``derived`` fields (and their inputs) a resume may change;
    ``fingerprint``: all of them with the fingerprints of the stages it reads."""

    spec: StageSpec
    type: StageType
    dir: Path
    outputs: dict
    cfg: Any
    extras: Any
    deps: tuple
    settings: dict
    fingerprint: str
    base: str = ""
    inputs: dict = field(default_factory=dict)
    resumable: dict = field(default_factory=dict)
    dep_fingerprints: dict = field(default_factory=dict)


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
        for root, name in ((run_dir.resolve(), "${run_dir}"), (run_dir, "${run_dir}"), (bundled_dir(), "${bundled}")):
            # the folder itself or a path inside it (``exp-prompts.jsonl`` beside a run folder ``exp`` is not)
            v = re.sub(r"(?<![^:,=])" + re.escape(str(root)) + r"(?=/|$|,|\[)", lambda _: name, v)
        return v
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


def _inside(path: Path, folders: list[Path]) -> bool:
    """``path`` lies in one of ``folders`` (compared as resolved paths, component by component)."""
    p = path.expanduser().resolve()
    return any(p == f or p.is_relative_to(f) for f in folders)


def _check_inputs(recipe: Recipe, spec: StageSpec, cfg, extras, run_dir: Path) -> dict:
    """Input files must exist; returns {setting: fingerprint} of every input the stage reads (its
    ``reads`` fields, ``data.identity``), except an earlier stage's output (that stage's fingerprint
    covers it). Raises ``ConfigError`` naming ``file:line`` for a missing input file."""
    from ..data.identity import reads_fields
    from ..rewards.inputs import fingerprint_input

    stage_dirs = [(run_dir / s.name).resolve() for s in recipe.stages]
    out: dict = {}
    for obj in (cfg, extras):
        if obj is None:
            continue
        for key, kind in reads_fields(type(obj)).items():
            value = getattr(obj, key)
            if key in out or value in (None, "", []):
                continue
            values = value if isinstance(value, list) else [value]
            raw = spec.settings.get(key)
            raws = raw if isinstance(raw, list) and len(raw) == len(values) else [raw] * len(values)
            fps = []
            for v, r in zip(values, raws):
                if any(ref.startswith("stages.") for ref in refs_in(r)):
                    continue  # an earlier stage's output: that stage's fingerprint covers it
                p = Path(str(v).split("[")[0] if kind == "file" else str(v).split(",")[0].split(":", 1)[-1])
                if _looks_like_path(str(p)) and _inside(p, stage_dirs):
                    continue  # an earlier stage's output, named by its path
                if kind == "file" and _looks_like_path(str(v)):
                    if not p.expanduser().exists():
                        raise ConfigError(f"{spec.name}.{key}", f"{p}: file not found",
                                          where=spec.where(recipe.path, key))
                fp = fingerprint_input(kind, str(v), pull=False)
                fps.append(_plain(fp, run_dir))
            if fps:
                out[key] = fps if isinstance(value, list) else fps[0]
    return out


def stage_paths(typ: StageType, stage_dir: Path) -> dict:
    """{output name: path} of a stage whose folder is ``stage_dir`` (``dir`` included)."""
    outs = {k: (stage_dir / v if v else stage_dir) for k, v in typ.outputs.items()}
    outs["dir"] = stage_dir
    return outs


def _settings(typ: StageType, cfg, extras, run_dir: Path, roles: tuple) -> dict:
    """The stage's settings whose identity mark is in ``roles`` (``data.identity``), runner-owned ones aside."""
    from ..data.identity import role

    out = {}
    for obj in (extras, cfg):
        if obj is not None:
            out.update({f.name: _plain(getattr(obj, f.name), run_dir) for f in dataclasses.fields(obj)
                        if role(f) in roles and f.name not in typ.owned})
    return out


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _build(recipe: Recipe, spec: StageSpec, typ: StageType, resolved: dict, outputs: dict):
    try:
        return typ.build(resolved, outputs)
    except ConfigError as e:
        key = e.field if e.field in spec.lines else None
        raise ConfigError(f"{spec.name}.{e.field}", e.problem, where=spec.where(recipe.path, key)) from None
    except (FinealignError, TypeError, ValueError) as e:
        key = next((k for k in spec.settings if f"{k}:" in str(e) or f"{k} " in str(e)), None)
        raise ConfigError(spec.name, str(e), where=spec.where(recipe.path, key)) from None


def plan(recipe: Recipe, run_dir: str | Path) -> list[PlannedStage]:
    """Resolve every stage's settings and build its config: all checks before anything runs.

    Raises ``ConfigError`` naming ``file:line`` and ``stage.field`` for a bad value, a missing input
    file or an unset environment variable.
    """
    from ..data.identity import DERIVED, GROWS, role

    run_dir = Path(run_dir)
    ctx = resolve_vars(recipe, run_dir)
    ctx["stages"] = {s.name: stage_paths(STAGE_TYPES[s.type], run_dir / s.name) for s in recipe.stages}
    planned: list[PlannedStage] = []
    for spec in recipe.stages:
        typ = STAGE_TYPES[spec.type]
        resolved = {k: resolve(v, ctx, spec.where(recipe.path, k), f"{spec.name}.{k}") for k, v in spec.settings.items()}
        outputs = ctx["stages"][spec.name]
        cfg, extras = _build(recipe, spec, typ, resolved, outputs)
        inputs = _check_inputs(recipe, spec, cfg, extras, run_dir)
        marks = {f.name: role(f) for c in (extras, cfg) if c is not None for f in dataclasses.fields(c)}
        deps = [s.name for s in recipe.stages[: spec.index]] if typ.needs_all else stage_deps(spec)
        settings = _settings(typ, cfg, extras, run_dir, (True,))
        dep_fps = {d: next(p.fingerprint for p in planned if p.spec.name == d) for d in deps}
        base_inputs = {k: v for k, v in inputs.items() if marks.get(k, True) is True}
        base = _digest({"type": typ.name, "settings": settings, "deps": dep_fps, "inputs": base_inputs})
        resumable = {"settings": _settings(typ, cfg, extras, run_dir, (GROWS, DERIVED)),
                     "grows": sorted(k for k, m in marks.items() if m == GROWS and k not in typ.owned),
                     "inputs": {k: v for k, v in inputs.items() if k not in base_inputs}}
        fp = _digest({"base": base, "resumable": resumable})
        planned.append(PlannedStage(spec, typ, run_dir / spec.name, outputs, cfg, extras, tuple(deps), settings, fp,
                                    base, inputs, resumable, dep_fps))
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


def _extends(rec: dict | None, ps: PlannedStage) -> bool:
    """``rec`` (a marker) was made with ``ps``'s base and ``ps`` only grows its ``grows`` fields (or changes
    ``derived`` ones): resuming the stage's output brings it up to date."""
    from ..data.identity import grew

    if not rec or rec.get("base") != ps.base:
        return False
    old = (rec.get("resumable") or {}).get("settings") or {}
    new = ps.resumable.get("settings") or {}
    return grew({k: old.get(k) for k in ps.resumable.get("grows", ())},
                {k: new.get(k) for k in ps.resumable.get("grows", ())})


def stage_state(ps: PlannedStage) -> str:
    """done (same fingerprint) | extend (done; only ``grows``/``derived`` settings changed, so the stage resumes
    in place) | changed (done with other settings or inputs) | partial | partial-changed | new."""
    m = read_marker(ps.dir)
    if m is not None:
        if m.get("fingerprint") == ps.fingerprint:
            return "done"
        return "extend" if _extends(m, ps) else "changed"
    if ps.dir.exists() and any(ps.dir.iterdir()):
        s = read_marker(ps.dir, STARTED)
        same = s is None or s.get("fingerprint") == ps.fingerprint or _extends(s, ps)
        return "partial" if same else "partial-changed"
    return "new"


def _changes(old: dict, ps: PlannedStage) -> list[str]:
    """What differs between a stage's record (marker or started file) and its plan: settings, inputs
    (``input NAME: ...``, by content fingerprint) and input stages."""
    from ..data.identity import differences

    new_settings = {**ps.settings, **(ps.resumable.get("settings") or {})}
    old_settings = {**(old.get("settings") or {}), **((old.get("resumable") or {}).get("settings") or {})}
    out = [d.replace(": was ", ": ").replace(", now ", " -> ") for d in differences(old_settings, new_settings)]
    if "inputs" in old:
        out += [f"input {d}".replace(": was ", ": ").replace(", now ", " -> ")
                for d in differences(old.get("inputs") or {}, ps.inputs)]
    old_deps = old.get("dep_fingerprints")
    if old_deps is not None:
        out += [f"input stage {d} changed" for d in ps.deps if old_deps.get(d) != ps.dep_fingerprints.get(d)]
    return out


def _record(ps: PlannedStage) -> dict:
    """What the started file and the done-marker record of a stage's plan."""
    return {"fingerprint": ps.fingerprint, "base": ps.base, "settings": ps.settings, "inputs": ps.inputs,
            "resumable": ps.resumable, "deps": list(ps.deps), "dep_fingerprints": ps.dep_fingerprints}


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
                what = "was run with other settings" if st in ("changed", "extend") else "has not finished"
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
              recipe: Recipe, share: bool = True) -> StageOutcome:
    """Run one stage (resuming a partial output made with the same settings) and write its marker."""
    from ..data.io import write_json

    ps.dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    write_json(ps.dir / STARTED, {**_record(ps), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    ctx = StageContext(ps.dir, ps.outputs, run_dir, log, progress, quiet, share)
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
        "stage": ps.spec.name, "type": ps.type.name, **_record(ps), "recipe": recipe.name, "scale": recipe.scale,
        "started_at": prev.get("started_at"), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(seconds, 1), "summary": _plain(summary)})
    return StageOutcome(ps.spec.name, ps.type.name, "ran", seconds, summary)


def run_recipe(recipe: Recipe, run_dir: str | Path, *, only=(), start: str | None = None, skip=(),
               log: Callable[[str], None] = print, progress=None, quiet: bool = False,
               dry_run: bool = False, share: bool = True) -> list[StageOutcome]:
    """Plan, check and run the selected stages of ``recipe`` into ``run_dir``; see the module docstring.

    ``progress(label)`` returns an ``on_progress(done, total, info)`` callback for one progress bar (the
    CLI draws them); ``dry_run`` only plans and reports each stage's state; ``share=False`` turns off the
    score caches the stages share (``RUN_DIR/.score-cache/``), so each stage scores afresh: the baseline of
    ``benchmarks/work_done_once.py``. Raises ``ConfigError`` for a
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
        if state in ("changed", "partial-changed", "extend"):
            old = read_marker(ps.dir) or read_marker(ps.dir, STARTED) or {}
            diff = _changes(old, ps)
            why = "; ".join(diff) if diff else "an input stage or input file changed"
            what = "inputs" if diff and all(d.startswith("input ") for d in diff) else "settings"
            if state == "extend":
                log(f"{head}: {what} changed since the last run ({why}); resuming its output to bring it up to date")
                (ps.dir / MARKER).unlink(missing_ok=True)
            else:
                log(f"{head}: {what} changed since the last run ({why}); rerunning from scratch")
                shutil.rmtree(ps.dir)
        elif state == "partial":
            log(f"{head}: resuming the unfinished run in {ps.dir}")
        else:
            log(f"{head}: running -> {ps.outputs['out']}")
        out = run_stage(ps, run_dir, log=log, progress=progress, quiet=quiet, recipe=recipe, share=share)
        if out.status == "ran":
            log(f"      done in {out.seconds:.1f} s")
        outcomes.append(out)
        if out.status == "incomplete":
            break
    return outcomes
