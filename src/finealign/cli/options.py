"""CLI commands generated from config dataclasses (see :mod:`finealign.config`).

``command_from_config(app, "ppo", PPOConfig, run)`` registers ``finealign ... ppo`` whose flags are
the dataclass's fields (``--field-name`` unless the field names another flag), each with the field's
help text and default, plus ``--config FILE.yaml`` (the YAML overlay; flags override it). Deprecated
spellings listed in a field's metadata still work and print one deprecation line. The command
builds the config with :func:`finealign.config.build_config` (so validation and its error style are
the dataclass's own) and calls ``run(cfg)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from ..config import build_config, flag_of, load_yaml_settings
from ..errors import ConfigError

_DEPRECATED_PREFIX = "deprecated__"


def _cli_type(hint) -> Any:
    """The type typer sees: Optional[...] of a scalar, or List[str] for list fields."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        if len(args) == 1:
            return _cli_type(args[0])
        return str
    if origin is list:
        return Optional[List[str]]
    if hint in (int, float, bool, str):
        return Optional[hint]
    if hint is Path:
        return Optional[str]
    return Optional[str]


def _help(f: dataclasses.Field) -> str:
    meta = f.metadata or {}
    text = meta.get("help", "")
    if meta.get("choices") and "|" not in text:
        text += f" One of: {', '.join(map(str, meta['choices']))}."
    if f.default is not dataclasses.MISSING and f.default not in (None, "", False) and not meta.get("required"):
        text += f" [default: {f.default}]"
    if meta.get("required"):
        text += " [required]"
    from rich.markup import escape

    return escape(text)  # typer renders help as rich markup: "[default: 16]" and "NAME[a:b]" stay visible


def config_parameters(cls: type) -> tuple[list[inspect.Parameter], dict[str, tuple[str, bool]]]:
    """typer parameters for every CLI-visible field of ``cls``, and {deprecated param name: (field,
    negate)} (``negate``: the old flag sets a boolean field to False, ``deprecated_off``)."""
    hints = typing.get_type_hints(cls)
    params: list[inspect.Parameter] = []
    deprecated: dict[str, tuple[str, bool]] = {}
    positional = []
    shorts = {(f.metadata or {}).get("short") for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        meta = f.metadata or {}
        if not meta.get("cli", True) or not f.init:
            continue
        hint = hints.get(f.name, str)
        ctype = _cli_type(hint)
        if meta.get("positional"):
            default = typer.Argument(None, help=_help(f), show_default=False,
                                     metavar=meta.get("metavar") or f.name.upper())
            positional.append(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                default=default, annotation=ctype))
            continue
        flag = flag_of(f)
        decls = [flag]
        if ctype is Optional[bool]:
            neg = "--no-" + flag[2:]
            decls = [f"{flag}/{neg}"]
        if meta.get("short"):
            decls.append(meta["short"])
        opt = typer.Option(None, *decls, help=_help(f), show_default=False, metavar=meta.get("metavar"))
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ctype))
        olds = [(old, False) for old in meta.get("deprecated", ())]
        olds += [(old, True) for old in meta.get("deprecated_off", ())]
        for old, negate in olds:
            pname = _DEPRECATED_PREFIX + old.lstrip("-").replace("-", "_")
            deprecated[pname] = (f.name, negate)
            oopt = typer.Option(None, old, hidden=True, show_default=False)
            params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=oopt, annotation=ctype))
    if "quiet" not in {f.name for f in dataclasses.fields(cls)}:
        params.append(inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, "--quiet", "-q", help="No progress bars or library progress output.")))
        params.append(inspect.Parameter(_DEPRECATED_PREFIX + "no_progress", inspect.Parameter.KEYWORD_ONLY,
                                        annotation=bool, default=typer.Option(False, "--no-progress", hidden=True)))
    cfg_decls = ["--config"] + ([] if "-c" in shorts else ["-c"])
    cfg_opt = typer.Option(None, *cfg_decls, help="YAML file of these settings; flags override it.",
                           show_default=False)
    params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=cfg_opt,
                                    annotation=Optional[Path]))
    return positional + params, deprecated


def config_from_cli(cls: type, values: dict, deprecated: dict[str, tuple[str, bool]], warn: Callable[[str], None],
                    fixed: dict | None = None):
    """Build ``cls`` from parsed CLI values (``config`` = the YAML path; None = not given).

    ``fixed``: {field: value} the command sets (``method: kto`` for ``train kto``); a YAML file may
    name such a field only with the same value (ConfigError naming its line otherwise).
    """
    yaml_path = values.pop("config", None)
    if fixed and yaml_path:
        for k, (v, where) in load_yaml_settings(yaml_path, cls, lambda m: None).items():
            if k in fixed and v != fixed[k]:
                raise ConfigError(k, f"{v!r} given to a command that sets {fixed[k]!r}", where=where)
    overrides: dict = {}
    old_values: dict = {}
    for name, value in values.items():
        if name in deprecated:
            if value is None or (isinstance(value, list) and not value):
                continue
            fname, negate = deprecated[name]
            f = {x.name: x for x in dataclasses.fields(cls)}[fname]
            new = f"--no-{flag_of(f)[2:]}" if negate else flag_of(f)
            warn(f"warning: --{name[len(_DEPRECATED_PREFIX):].replace('_', '-')} is deprecated and will be "
                 f"removed in the next release; use {new}")
            old_values.setdefault(fname, (not value) if negate else value)
            continue
        if isinstance(value, list) and not value:
            value = None
        if value is not None:
            overrides[name] = value
    for fname, value in old_values.items():
        overrides.setdefault(fname, value)
    overrides.update(fixed or {})
    return build_config(cls, yaml_path, warn=warn, **overrides)


def interrupted_message(resumable: bool, out: str | None) -> str:
    """The one line printed on Ctrl-C: where a rerun resumes from, for a resumable verb."""
    if not resumable:
        return "interrupted"
    return "interrupted; rerun the same command to resume" + (f" from {out}" if out else "")


def command_from_config(app: typer.Typer, name: str, cls: type, run: Callable[[Any], Any], *,
                        help: str | None = None, hidden: bool = False, fixed: dict | None = None,
                        resumable: bool = False) -> Callable:
    """Register ``name`` on ``app``: flags generated from ``cls``, then ``run(cfg)`` (or ``run(cfg,
    quiet=...)``). ``fixed``: fields the command sets (give them ``cli=False``), see
    :func:`config_from_cli`. ``resumable``: a rerun of the same command resumes; Ctrl-C then prints
    ``interrupted; rerun the same command to resume from OUT`` (OUT: the config's ``out``, or the folder
    the verb named with :func:`~finealign.cli.common.resumes_into`), else ``interrupted``; exit 130."""
    from .common import console, resume_target

    params, deprecated = config_parameters(cls)

    def warn(m):
        console.print(m, style="yellow", highlight=False, soft_wrap=True)

    def command(**kwargs):
        quiet = kwargs.pop("quiet", None)
        if kwargs.pop(_DEPRECATED_PREFIX + "no_progress", False):
            warn("warning: --no-progress is deprecated and will be removed in the next release; use --quiet")
            quiet = True
        cfg = config_from_cli(cls, dict(kwargs), deprecated, warn, fixed)
        resume_target.clear()
        try:
            return run(cfg) if quiet is None else run(cfg, quiet=bool(quiet))
        except KeyboardInterrupt:
            out = resume_target[0] if resume_target else getattr(cfg, "out", None)
            console.print(interrupted_message(resumable, None if out is None else str(out)), highlight=False,
                          markup=False, soft_wrap=True)
            raise typer.Exit(130) from None

    command.__signature__ = inspect.Signature(params)
    command.config_class = cls  # tests walk the app and check every verb's settings
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or (cls.__doc__ or "").strip().split("\n\n")[0]
    app.command(name, help=command.__doc__, hidden=hidden)(command)
    return command


def command_from_row(parent: typer.Typer, name: str, run: Callable[[Any], Any]) -> Callable:
    """Register the verb table's row ``name`` (``finealign.verbs``) on ``parent`` (the app of its command's
    leading words): its last word, settings, fixed fields, help and ``resumable`` all come from the row;
    ``run(cfg, quiet=...)`` is the command's printing function (it runs the row with ``run_verb``)."""
    from ..verbs import verbs

    row = verbs()[name]
    cmd = command_from_config(parent, row.command[-1], row.settings, run, help=row.help, fixed=row.fixed or None,
                              resumable=row.resumable)
    cmd.verb = row.name
    return cmd
