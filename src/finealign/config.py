"""One config mechanism for every verb: documented dataclasses, a YAML overlay, one validation style.

Every verb's settings are one ``@dataclass(kw_only=True)`` built from :func:`setting` fields (each
carries its help text, and optionally its CLI flag, short flag, deprecated spellings and choices).
Shared parts are composed from the common dataclasses below (:class:`ModelArgs` = model, dtype,
device, mixed precision; its parts :class:`ModelLoadArgs` and :class:`DeviceArgs`;
:class:`SamplingArgs`; :class:`RunArgs`) by inheritance. Validation lives in ``validate`` methods:
:class:`Settings` runs the ``validate`` of every class in the MRO that defines one, so a composed
config checks each part once, and every problem is a :class:`~finealign.errors.ConfigError`
``field: problem``.

``--quiet`` is not a setting (it changes no output): the generated CLI adds it to every verb and
passes it to the verb's function.

Precedence: the dataclass defaults < a YAML file (``--config``) < explicit overrides (CLI flags).
The CLI (``finealign.cli.options.command_from_config``) is generated from the same dataclass, so
every setting is reachable from both and the help text is the field's ``help``.

Example::

    @dataclass(kw_only=True)
    class GenerateConfig(ModelArgs, SamplingArgs, RunArgs):
        prompts: str = setting(help="Prompt-bearing file.", short="-p", required=True)
        k: int = setting(4, help="Samples per prompt.", check=positive)

    cfg = build_config(GenerateConfig, "gen.yaml", k=8)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

# One vocabulary for dtypes and mixed precision, everywhere.
DTYPES = ("float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
AUTO_MIXED_PRECISION_HELP = ("auto: bf16 autocast on CUDA GPUs with bf16 and on CPUs with AMX-BF16, where it "
                             "was measured faster (docs/ppo.md, docs/token-rm.md); else no")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (``amx_bf16``, ``avx512_bf16``, ...) from ``/proc/cpuinfo``; empty where the
    file is missing (not Linux) or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_mixed_precision(value: str, device: str = "auto") -> str:
    """``auto`` -> ``bf16`` where bf16 autocast is faster than float32 by measurement, else ``no``; any other
    value unchanged.

    bf16 where: ``device`` is (or ``auto`` resolves to) a CUDA GPU that supports bf16, or a CPU with
    AMX-BF16 (``amx_bf16`` in ``/proc/cpuinfo``), where bf16 autocast made a PPO step 1.59-1.72x faster
    than float32 (``docs/ppo.md``). CPUs without AMX run bf16 matrix products through slower paths, so
    they stay in float32.
    """
    if value != "auto":
        return value
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        if device == "cuda":
            return "no"
    return "bf16" if "amx_bf16" in cpu_flags() else "no"


def normalize_dtype(value: str) -> str:
    """``fp32``/``bf16``/``fp16`` and the full names -> the full torch name; ConfigError otherwise."""
    v = DTYPE_ALIASES.get(str(value).lower(), str(value).lower())
    if v not in DTYPES:
        raise ConfigError("dtype", f"{value!r} is not one of {', '.join(DTYPES)} (or fp32, bf16, fp16)")
    return v


def setting(default: Any = MISSING, *, help: str, flag: str | None = None, short: str | None = None,
            deprecated: tuple[str, ...] = (), deprecated_off: tuple[str, ...] = (), choices: tuple | None = None,
            positional: bool = False, required: bool = False, cli: bool = True, metavar: str | None = None,
            default_factory: Callable | None = None, check: Callable[[Any], str | None] | None = None,
            identity: bool | str = True, reads: str | None = None, keyed: bool = False) -> Any:
    """A documented dataclass field.

    ``help``: the doc shown by ``--help``; ``flag``: the CLI flag (default ``--field-name``);
    ``short``: e.g. ``-o``; ``deprecated``: old flag spellings that still work for one release and
    print a deprecation message (an old ``--long-name`` is also accepted as the YAML key
    ``long_name``, see :func:`renamed_fields`); ``deprecated_off``: old flags that set a boolean
    field to False (``--full`` for ``--no-lora``); ``choices``: allowed values (checked by
    :class:`Settings`); ``positional``: a CLI argument instead of an option; ``required``: must be
    set by YAML or flag (the default is then ``None``); ``cli``: False keeps it YAML-only (internal
    knobs); ``metavar``: the value's name in ``--help`` (e.g. ``OUT.jsonl``); ``check``: a function
    returning a problem string (or None) for the value.

    ``identity`` says whether the field changes what the output holds (``data.identity``): True (the
    default); False for device, batch size, logging cadence, engine, output path (a resumed run may
    change it); ``"grows"``: a larger value extends the output when the run resumes (a trainer's
    ``steps``); ``"derived"``: the output's part that depends on it is recomputed on every run.
    ``reads``: the field names an input whose content is fingerprinted: ``"file"`` (a data file or
    folder), ``"model"`` (a model spec), ``"scorer"`` / ``"editor"`` / ``"judge"`` (a spec naming a model).
    ``keyed``: the output holds one record per record (or sample) of what the field names, keyed by its id, so
    a resumed run with another value appends what is new (``generate``'s prompts and ``k``, ``score``'s input):
    the field is left out of the output's manifest (``data.identity.resume_identity``), still part of a
    recipe stage's identity.
    """
    meta = {"identity": identity, "reads": reads, "keyed": keyed,
            "help": help, "flag": flag, "short": short, "deprecated": tuple(deprecated),
            "deprecated_off": tuple(deprecated_off), "choices": choices, "metavar": metavar,
            "positional": positional, "required": required, "cli": cli, "check": check}
    if required and default is MISSING and default_factory is None:
        default = None
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------ reusable checks

def positive(v) -> str | None:
    return None if v is None or v > 0 else f"must be positive, got {v}"


def non_negative(v) -> str | None:
    return None if v is None or v >= 0 else f"must be >= 0, got {v}"


def unit_interval(v) -> str | None:
    return None if v is None or 0 <= v <= 1 else f"must lie in [0, 1], got {v}"


class _SettingsMeta(type):
    """Lets a config be constructed with a deprecated field name (:func:`renamed_fields`) for one
    release: ``TokenRMConfig(max_steps=5)`` is ``TokenRMConfig(steps=5)`` after a ``FutureWarning``."""

    def __call__(cls, *args, **kwargs):
        renamed = renamed_fields(cls) if dataclasses.is_dataclass(cls) else {}
        for old in [k for k in kwargs if k in renamed]:
            new = _rename(old, renamed[old], kwargs, None, _deprecation_warning)
            kwargs[new] = kwargs.pop(old)
        return super().__call__(*args, **kwargs)


@dataclass(kw_only=True)
class Settings(metaclass=_SettingsMeta):
    """Base of every config: runs field checks, then each class's ``validate`` in MRO order."""

    def __post_init__(self):
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            value = _coerce(f.name, value, hints.get(f.name))
            setattr(self, f.name, value)
            meta = f.metadata or {}
            for v in (value if isinstance(value, list) else [value]):  # a list: each of its values
                if meta.get("choices") and v is not None and v not in meta["choices"]:
                    raise ConfigError(f.name, f"{v!r} is not one of {', '.join(map(str, meta['choices']))}")
            if meta.get("check") and value is not None:
                problem = meta["check"](value)
                if problem:
                    raise ConfigError(f.name, problem)
        for klass in reversed(type(self).__mro__):
            v = klass.__dict__.get("validate")
            if v is not None:
                v(self)
        for f in dataclasses.fields(self):
            if (f.metadata or {}).get("required") and getattr(self, f.name) in (None, "", []):
                raise ConfigError(f.name, f"required (give {flag_of(f)} or set it in the --config YAML)")

    def to_dict(self) -> dict:
        """Plain, YAML/JSON-safe values of every field."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def fingerprint(self, exclude: tuple[str, ...] = ()) -> str:
        """sha256 (16 hex) of the settings that make an output (``exclude``: ones that do not)."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ common parts

@dataclass(kw_only=True)
class DeviceArgs(Settings):
    """In which dtype, on which device a model runs (for verbs whose model is named otherwise, e.g. an
    editor or scorer spec)."""

    dtype: str = setting("float32", help="Weights' dtype: float32 | bfloat16 | float16 (fp32/bf16/fp16 accepted).")
    device: str = setting("auto", choices=DEVICES, identity=False, help="auto (cuda when available) | cpu | cuda.")

    def validate(self):
        self.dtype = normalize_dtype(self.dtype)


@dataclass(kw_only=True)
class ModelLoadArgs(DeviceArgs):
    """Which model, in which dtype, on which device (inference verbs without autocast)."""

    model: str = setting("smollm2-135m-instruct", short="-m", reads="model",
                         help="Model spec: built-in name, .gguf file, local directory or hub id.")


@dataclass(kw_only=True)
class ModelArgs(ModelLoadArgs):
    """Which model, in which dtype, on which device, with which autocast."""

    mixed_precision: str = setting("auto", choices=MIXED_PRECISIONS,
                                   help="Autocast: auto | no | bf16 | fp16 (" + AUTO_MIXED_PRECISION_HELP + ").")

    def validate(self):
        self.mixed_precision = resolve_mixed_precision(self.mixed_precision, self.device)


@dataclass(kw_only=True)
class SamplingArgs(Settings):
    """How responses are sampled."""

    temperature: float = setting(0.7, help="Sampling temperature (0: greedy).", check=non_negative)
    top_p: float = setting(0.9, help="Nucleus sampling mass.", check=unit_interval)
    max_new_tokens: int = setting(256, help="Tokens per response at most.", check=positive)


@dataclass(kw_only=True)
class RunArgs(Settings):
    """Where the output goes and how the run behaves."""

    out: str = setting(None, short="-o", required=True, identity=False, help="Output path; a rerun resumes into it.")
    seed: int = setting(0, help="Random seed.")
    overwrite: bool = setting(False, identity=False, help="Start afresh instead of resuming into an existing output.")


ENGINES = ("local", "ray")


@dataclass(kw_only=True)
class EngineArgs(Settings):
    """Where the data-parallel work runs (``generate``, ``score``, ``label``, ``eval-rm``). None of these
    settings changes an output (a sharded run is byte-identical to one process): each is marked
    ``identity=False`` (``data.identity``), so switching engine resumes the same output."""

    engine: str = setting("local", identity=False, choices=ENGINES,
                          help="local: this process | ray: shards processed by Ray workers "
                               "(pip install 'finealign[ray]').")
    ray_address: str | None = setting(None, identity=False,
                                      help="Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto); "
                                           "default: start a local Ray instance on 127.0.0.1.")
    workers: int | None = setting(None, identity=False, check=positive, help="Ray workers, each loading the model once "
                                  "(default: one per GPU of the cluster, else one per CPU).")
    shard_size: int | None = setting(None, identity=False, check=positive,
                                     help="Units (prompts or responses) per shard, "
                                          "rounded up to the verb's batch (default: about 1/32 of the work, at most 512).")

    def validate(self):
        if self.engine != "ray" and (self.ray_address or self.workers):
            field = "workers" if self.workers else "ray_address"
            raise ConfigError(field, "needs the ray engine (--engine ray; in a recipe `engine: ray`)")


# ------------------------------------------------------------------ building from YAML + overrides

def flag_of(f: dataclasses.Field) -> str:
    """The CLI flag of a field: its ``flag`` metadata or ``--field-name``."""
    return (f.metadata or {}).get("flag") or "--" + f.name.replace("_", "-")


_RENAMED: dict[type, dict[str, str]] = {}


def renamed_fields(cls: type) -> dict[str, str]:
    """{old key: field name}: every deprecated ``--long-flag`` of a field read as a key (``--max-steps``
    -> ``max_steps``). YAML files, :func:`build_config` and the constructor accept the old key for one
    release, with a deprecation message."""
    if cls not in _RENAMED:
        names = {f.name for f in dataclasses.fields(cls)}
        out = {}
        for f in dataclasses.fields(cls):
            for old in (f.metadata or {}).get("deprecated", ()):
                key = old[2:].replace("-", "_") if old.startswith("--") else None
                if key and key not in names:
                    out[key] = f.name
        _RENAMED[cls] = out
    return _RENAMED[cls]


def _deprecation_warning(message: str) -> None:
    import warnings

    warnings.warn(message.removeprefix("warning: "), FutureWarning, stacklevel=4)


def _rename(key: str, new: str, values: dict, where: str | None, warn: Callable[[str], None]) -> str:
    if new in values:
        raise ConfigError(key, f"give {new} only ({key} is its deprecated name)", where=where)
    warn(f"warning: {where + ': ' if where else ''}{key} is deprecated and will be removed in the next release; "
         f"use {new}")
    return new


def load_yaml_settings(path: str | Path, cls: type, warn: Callable[[str], None] | None = None) -> dict:
    """Read a YAML mapping of ``cls`` fields; an unknown field or non-mapping names the file and line.

    A deprecated key (:func:`renamed_fields`) is read as its field after ``warn(message)``.
    Raises ConfigError ``path:line: field: problem``.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("config", f"cannot read: {e.strerror or e}", where=str(path)) from e
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError("config", f"not valid YAML: {getattr(e, 'problem', e)}", where=where) from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"expected a mapping of {cls.__name__} settings, got {type(data).__name__}",
                          where=f"{path}:1")
    lines = {}
    for key_node, _ in getattr(node, "value", []):
        lines[key_node.value] = key_node.start_mark.line + 1
    known = {f.name: f for f in dataclasses.fields(cls)}
    renamed = renamed_fields(cls)
    out: dict = {}
    for k, v in data.items():
        where = f"{path}:{lines.get(k, 1)}"
        if k in renamed:
            out[_rename(str(k), renamed[k], data, where, warn or _deprecation_warning)] = (v, where)
        elif k not in known:
            near = _closest(str(k), list(known))
            hint = f"; did you mean {near}?" if near else ""
            raise ConfigError(str(k), f"not a setting of {cls.__name__}{hint}", where=where)
        else:
            out[k] = (v, where)
    return out


def build_config(cls: type, yaml_path: str | Path | None = None, *, warn: Callable[[str], None] | None = None,
                 **overrides):
    """``cls`` from its defaults < the YAML file < ``overrides`` (None values are ignored).

    A validation error raised for a field set in the YAML file names the file and line. Deprecated
    keys (:func:`renamed_fields`) are read as their field after ``warn(message)`` (default: a
    ``FutureWarning``).
    """
    warn = warn or _deprecation_warning
    values: dict = {}
    where: dict = {}
    if yaml_path:
        for k, (v, w) in load_yaml_settings(yaml_path, cls, warn).items():
            values[k], where[k] = v, w
    renamed = renamed_fields(cls)
    for k, v in overrides.items():
        if v is not None:
            if k in renamed:
                k = _rename(k, renamed[k], {n: x for n, x in overrides.items() if x is not None}, None, warn)
            values[k] = v
            where.pop(k, None)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(unknown[0], f"not a setting of {cls.__name__}")
    try:
        return cls(**values)
    except ConfigError as e:
        if e.where is None and e.field in where:
            raise ConfigError(e.field, e.problem, where=where[e.field]) from None
        raise


def part(cfg, cls: type):
    """The ``cls`` part of a composed config: a ``cls`` built from ``cfg``'s values of ``cls``'s fields
    (e.g. the library's ``LabelConfig`` of the ``label`` verb's settings)."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if f.init})


def dump_yaml(cfg) -> str:
    """The config as YAML (the file ``--config`` reads back)."""
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# ------------------------------------------------------------------ helpers

def _hints(cls: type) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolvable annotation: skip coercion
        return {}


def _coerce(name: str, value, hint):
    """YAML/CLI values to the field's type: '3' -> 3 for int, 'a,b' -> ['a', 'b'] for list[str]."""
    if value is None or hint is None:
        return value
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        hint, origin, args = args[0], typing.get_origin(args[0]), list(typing.get_args(args[0]))
    try:
        if hint is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("true", "yes", "1", "on"):
                    return True
                if low in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError(value)
            return str(value)
        if hint is Path:
            if isinstance(value, (dict, list, bool)):
                raise ValueError(value)
            return Path(value)
        if origin is list:
            if isinstance(value, str):
                value = [s.strip() for s in value.split(",") if s.strip()]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value]  # one value where a list is expected (YAML ``sizes: 4``)
            if not isinstance(value, (list, tuple)):
                raise ValueError(value)
            elem = args[0] if args else None
            return [_coerce(name, v, elem) if elem in (str, int, float) else v for v in value]
    except (TypeError, ValueError):
        tname = getattr(hint, "__name__", str(hint))
        raise ConfigError(name, f"expected {tname}, got {value!r}") from None
    return value


def _plain(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _closest(word: str, names: list[str]) -> str | None:
    import difflib

    m = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return m[0] if m else None
