"""Recipes: a YAML list of stages, read with line numbers and checked before anything runs.

A recipe::

    name: flr-dpo
    description: one line
    vars:                       # values used as ${vars.NAME}; a scale overlays them
      model: smollm2-135m-instruct
      prompts: ${bundled}/mt_bench_train.jsonl
    scales:                     # --scale NAME: these vars replace the defaults above
      tiny: {model: tiny-random}
    stages:
      - name: gen               # names the stage's output folder RUN_DIR/gen/ (default: its type)
        type: generate          # generate | score | label | edit | train-dpo | train-kto | ...
        model: ${vars.model}    # every other key is a setting of the stage's config dataclass
        prompts: ${vars.prompts}
      - name: pairs
        type: label
        input: ${stages.gen.out}   # the output of an earlier stage

References, written ``${...}`` inside any string value (a value that is exactly one reference keeps
the referenced value's type, e.g. an integer var):

* ``${vars.NAME}``: a recipe variable (after the scale overlay and ``--var NAME=VALUE``);
* ``${stages.NAME.out}``: an earlier stage's main output (``dir``: its folder; other outputs by name,
  e.g. ``${stages.ppo.policy}``);
* ``${bundled}``: the folder of data bundled with finealign (``finealign/resources/data``);
* ``${recipe_dir}``: the recipe file's folder; ``${run_dir}``: the run folder; ``${scale}``;
  ``${env.NAME}``: an environment variable (an error when unset).

Errors name the file, line and field: ``recipe.yaml:12: stages[2].lr: not a setting of train-dpo``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError

REF = re.compile(r"\$\{([^}]*)\}")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
TOP_KEYS = ("name", "description", "vars", "scales", "stages")
STAGE_KEYS = ("name", "type")


def bundled_dir() -> Path:
    """The folder of the data bundled with finealign (prompts, edits, pairs; see its NOTICE)."""
    return Path(str(resources.files("finealign.resources").joinpath("data")))


def builtin_recipes_dir() -> Path:
    """The recipes shipped with finealign (the repository's ``recipes/`` folder)."""
    return Path(str(resources.files("finealign.resources").joinpath("recipes")))


def find_recipe(spec: str | Path) -> Path:
    """A recipe file path, or the name of a shipped recipe (``flr-dpo``, ``fine-grained-ppo``)."""
    p = Path(spec)
    if p.is_file():
        return p
    cand = builtin_recipes_dir() / f"{spec}.yaml"
    if "/" not in str(spec) and cand.is_file():
        return cand
    known = ", ".join(sorted(q.stem for q in builtin_recipes_dir().glob("*.yaml")))
    raise ConfigError("recipe", f"{spec}: no such file, nor a shipped recipe ({known})")


@dataclass(frozen=True)
class StageSpec:
    """One stage as written: ``settings`` are the raw values (references unresolved); ``lines``
    maps each key to its line in the file; ``index`` is its position in ``stages``."""

    name: str
    type: str
    settings: dict
    lines: dict
    line: int
    index: int

    def where(self, path: Path, key: str | None = None) -> str:
        return f"{path}:{self.lines.get(key, self.line) if key else self.line}"


@dataclass(frozen=True)
class Recipe:
    """A parsed, checked recipe: its stages in order and its variables after the scale overlay."""

    path: Path
    name: str
    description: str
    scale: str
    scales: tuple[str, ...]
    vars: dict
    stages: tuple[StageSpec, ...]
    var_lines: dict = field(default_factory=dict)

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError("stage", f"no stage named {name!r}; stages: {', '.join(s.name for s in self.stages)}")


# ---------------------------------------------------------------------------------------------- YAML


def _compose(path: Path):
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("recipe", f"cannot read: {e.strerror or e}", where=str(path)) from None
    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError("recipe", f"not valid YAML: {getattr(e, 'problem', None) or e}", where=where) from None


def _key_lines(node) -> dict:
    """{key: line (1-based)} of a YAML mapping node; {} for other nodes."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value}


def _child(node, key: str):
    import yaml

    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if k.value == key:
                return v
    return None


def _closest(word: str, names) -> str:
    import difflib

    m = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return f"; did you mean {m[0]}?" if m else ""


# ---------------------------------------------------------------------------------------------- loading


def load_recipe(spec: str | Path, *, scale: str | None = None, var_overrides: dict | None = None) -> Recipe:
    """Read and check a recipe: keys, stage types, stage names, setting names and references.

    ``scale`` picks an overlay of ``vars`` from ``scales`` (``None`` / ``default``: none);
    ``var_overrides`` ({name: value}, e.g. from ``--var``) are applied last. Setting values are
    checked later, by :func:`finealign.pipeline.runner.plan`, once the run folder is known. Raises
    ``ConfigError`` naming ``file:line`` and the field.
    """
    from .stages import STAGE_TYPES, normalize_type

    path = find_recipe(spec)
    node, data = _compose(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("recipe", "expected a mapping with `stages:`", where=f"{path}:1")
    top = _key_lines(node)
    for k in data:
        if k not in TOP_KEYS:
            raise ConfigError(str(k), f"not a recipe key (known: {', '.join(TOP_KEYS)}){_closest(str(k), TOP_KEYS)}",
                              where=f"{path}:{top.get(k, 1)}")
    vars_, var_lines, scales = _load_vars(path, data, node, scale, var_overrides or {})
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise ConfigError("stages", "a recipe needs a non-empty list of stages", where=f"{path}:{top.get('stages', 1)}")
    stage_nodes = _child(node, "stages").value
    stages: list[StageSpec] = []
    for i, (raw, snode) in enumerate(zip(raw_stages, stage_nodes)):
        line = snode.start_mark.line + 1
        if not isinstance(raw, dict):
            raise ConfigError(f"stages[{i}]", "expected a mapping with `type:`", where=f"{path}:{line}")
        lines = _key_lines(snode)
        if "type" not in raw:
            raise ConfigError(f"stages[{i}]", f"no `type:`; one of {', '.join(STAGE_TYPES)}", where=f"{path}:{line}")
        typ = normalize_type(str(raw["type"]))
        if typ not in STAGE_TYPES:
            raise ConfigError(f"stages[{i}].type", f"unknown stage type {raw['type']!r}; known: "
                              f"{', '.join(STAGE_TYPES)}{_closest(typ, STAGE_TYPES)}", where=f"{path}:{lines['type']}")
        name = str(raw.get("name", typ))
        if not NAME_RE.match(name):
            raise ConfigError(f"stages[{i}].name", f"{name!r}: use letters, digits, - and _",
                              where=f"{path}:{lines.get('name', line)}")
        if any(s.name == name for s in stages):
            raise ConfigError(f"stages[{i}].name", f"a stage named {name!r} already exists; give each a `name:`",
                              where=f"{path}:{lines.get('name', line)}")
        known = STAGE_TYPES[typ].setting_names()
        raw = _renamed_keys(raw, STAGE_TYPES[typ], lines, path, name, line)
        for k in raw:
            if k in STAGE_KEYS:
                continue
            if k not in known:
                owned = STAGE_TYPES[typ].owned.get(k)
                problem = (f"set by the runner ({owned}); do not set it" if owned else
                           f"not a setting of {typ}{_closest(str(k), known)}")
                raise ConfigError(f"{name}.{k}", problem, where=f"{path}:{lines.get(k, line)}")
        settings = {k: v for k, v in raw.items() if k not in STAGE_KEYS}
        stages.append(StageSpec(name, typ, settings, lines, line, i))
    recipe = Recipe(path, str(data.get("name") or path.stem), str(data.get("description") or ""),
                    scale or "default", scales, vars_, tuple(stages), var_lines)
    for s in recipe.stages:
        for k, v in s.settings.items():
            check_refs(recipe, s, k, v)
    return recipe


def _renamed_keys(raw: dict, stage_type, lines: dict, path: Path, name: str, line: int) -> dict:
    """``raw`` with a setting's deprecated key (``policy`` for ``model``: ``config.renamed_fields``) read as
    its new name, after one deprecation warning naming the file and line; both given is a ConfigError."""
    import warnings

    from ..config import renamed_fields

    renamed = renamed_fields(stage_type.config) if stage_type.config is not None else {}
    known = stage_type.setting_names()
    out = {}
    for k, v in raw.items():
        new = renamed.get(k) if k not in known else None
        if new is None:
            out[k] = v
            continue
        where = f"{path}:{lines.get(k, line)}"
        if new in raw:
            raise ConfigError(f"{name}.{k}", f"give {new} only ({k} is its deprecated name)", where=where)
        warnings.warn(f"{where}: {name}.{k} is deprecated and will be removed in the next release; use {new}",
                      FutureWarning, stacklevel=2)
        lines[new] = lines.get(k, line)
        out[new] = v
    return out


def _load_vars(path: Path, data: dict, node, scale: str | None, overrides: dict):
    vars_ = data.get("vars") or {}
    if not isinstance(vars_, dict):
        raise ConfigError("vars", "expected a mapping of variables", where=f"{path}:{_key_lines(node).get('vars', 1)}")
    var_lines = _key_lines(_child(node, "vars"))
    scales_raw = data.get("scales") or {}
    if not isinstance(scales_raw, dict):
        raise ConfigError("scales", "expected a mapping of scale name -> vars",
                          where=f"{path}:{_key_lines(node).get('scales', 1)}")
    names = ("default",) + tuple(str(k) for k in scales_raw if k != "default")
    vars_ = dict(vars_)
    if scale not in (None, "default"):
        if scale not in scales_raw:
            raise ConfigError("scale", f"{scale!r} is not a scale of this recipe; scales: {', '.join(names)}",
                              where=str(path))
        over = scales_raw[scale] or {}
        snode = _child(_child(node, "scales"), scale)
        slines = _key_lines(snode)
        if not isinstance(over, dict):
            raise ConfigError(f"scales.{scale}", "expected a mapping of vars", where=f"{path}:{snode.start_mark.line + 1}")
        for k, v in over.items():
            if k not in vars_:
                raise ConfigError(f"scales.{scale}.{k}", f"not a variable of this recipe (declare it under vars:)"
                                  f"{_closest(str(k), vars_)}", where=f"{path}:{slines.get(k, 1)}")
            vars_[k] = v
            var_lines[k] = slines.get(k, var_lines.get(k))
    for k, v in overrides.items():
        if k not in vars_:
            raise ConfigError(f"--var {k}", f"not a variable of {path.name}; variables: {', '.join(vars_)}")
        vars_[k] = _parse_scalar(v) if isinstance(v, str) else v
    return vars_, var_lines, names


def _parse_scalar(text: str) -> Any:
    """``--var k=8`` -> 8 (YAML scalar rules: numbers, true/false, null; anything else a string)."""
    import yaml

    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v if isinstance(v, (int, float, bool, str)) or v is None else text


# ---------------------------------------------------------------------------------------------- references


def refs_in(value) -> list[str]:
    """Every ``${...}`` reference inside a value (strings, lists, mappings)."""
    if isinstance(value, str):
        return REF.findall(value)
    if isinstance(value, list):
        return [r for v in value for r in refs_in(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in refs_in(v)]
    return []


def stage_deps(spec: StageSpec) -> list[str]:
    """Names of the earlier stages a stage's settings refer to, in order of first mention."""
    out: list[str] = []
    for v in spec.settings.values():
        for r in refs_in(v):
            parts = r.split(".")
            if parts[0] == "stages" and len(parts) >= 2 and parts[1] not in out:
                out.append(parts[1])
    return out


def check_refs(recipe: Recipe, spec: StageSpec, key: str, value) -> None:
    """Every reference of one setting names a known var, builtin or earlier stage output."""
    from .stages import STAGE_TYPES

    where = spec.where(recipe.path, key)
    for r in refs_in(value):
        parts = r.strip().split(".")
        head = parts[0]
        if head in ("bundled", "recipe_dir", "run_dir", "scale") and len(parts) == 1:
            continue
        if head == "env" and len(parts) == 2:
            continue
        if head == "vars" and len(parts) == 2:
            if parts[1] not in recipe.vars:
                raise ConfigError(f"{spec.name}.{key}", f"${{{r}}}: no variable {parts[1]!r}"
                                  f"{_closest(parts[1], recipe.vars)}", where=where)
            continue
        if head == "stages" and len(parts) == 3:
            earlier = {s.name: s for s in recipe.stages[: spec.index]}
            if parts[1] not in earlier:
                later = any(s.name == parts[1] for s in recipe.stages)
                problem = ("refers to a later stage; stages run in order" if later else
                           f"no earlier stage named {parts[1]!r}{_closest(parts[1], earlier)}")
                raise ConfigError(f"{spec.name}.{key}", f"${{{r}}}: {problem}", where=where)
            outs = STAGE_TYPES[earlier[parts[1]].type].output_names()
            if parts[2] not in outs:
                raise ConfigError(f"{spec.name}.{key}", f"${{{r}}}: stage {parts[1]} ({earlier[parts[1]].type}) has "
                                  f"outputs {', '.join(outs)}", where=where)
            continue
        raise ConfigError(f"{spec.name}.{key}", f"${{{r}}}: unknown reference; use ${{vars.NAME}}, "
                          "${stages.NAME.out}, ${bundled}, ${recipe_dir}, ${run_dir}, ${scale} or ${env.NAME}",
                          where=where)


def resolve(value, ctx: dict, where: str, field_name: str):
    """``value`` with every reference replaced (``ctx``: {"vars", "stages": {name: {output: path}},
    "bundled", "recipe_dir", "run_dir", "scale"}); a string that is exactly one reference keeps
    the referenced value's type."""
    if isinstance(value, list):
        return [resolve(v, ctx, where, field_name) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, ctx, where, field_name) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    m = REF.fullmatch(value.strip())
    if m:
        return _lookup(m.group(1).strip(), ctx, where, field_name)
    return REF.sub(lambda mm: str(_lookup(mm.group(1).strip(), ctx, where, field_name)), value)


def _lookup(ref: str, ctx: dict, where: str, field_name: str):
    parts = ref.split(".")
    if parts[0] == "vars":
        return ctx["vars"][parts[1]]
    if parts[0] == "stages":
        return str(ctx["stages"][parts[1]][parts[2]])
    if parts[0] == "env":
        if parts[1] not in os.environ:
            raise ConfigError(field_name, f"${{{ref}}}: environment variable {parts[1]} is not set", where=where)
        return os.environ[parts[1]]
    return str(ctx[parts[0]]) if parts[0] != "scale" else ctx["scale"]


def resolve_vars(recipe: Recipe, run_dir: Path) -> dict:
    """The recipe's vars with builtin references (``${bundled}``, ``${env.X}``, earlier vars) resolved."""
    ctx = {"vars": {}, "stages": {}, "bundled": bundled_dir(), "recipe_dir": recipe.path.resolve().parent,
           "run_dir": run_dir, "scale": recipe.scale}
    for k, v in recipe.vars.items():
        for r in refs_in(v):
            head = r.split(".")[0]
            ok = (head in ("bundled", "recipe_dir", "run_dir", "scale", "env")
                  or (head == "vars" and r.split(".")[-1] in ctx["vars"]))
            if not ok:
                raise ConfigError(f"vars.{k}", f"${{{r}}}: a variable may refer to builtins and earlier variables only",
                                  where=f"{recipe.path}:{recipe.var_lines.get(k, 1)}")
        ctx["vars"][k] = resolve(v, ctx, f"{recipe.path}:{recipe.var_lines.get(k, 1)}", f"vars.{k}")
    return ctx
