"""``finealign models pull|list``; flags generated from :class:`PullConfig` / :class:`ListConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings, setting


@dataclass(kw_only=True)
class PullConfig(Settings):
    """Download, verify (sha256) and cache a built-in model as safetensors."""

    name: str = setting("smollm2-135m-instruct", positional=True, help="Built-in model name.")
    force: bool = setting(False, help="Download and convert again.")


@dataclass(kw_only=True)
class ListConfig(Settings):
    """List the built-in models and whether they are cached."""


def run_pull(cfg: PullConfig, quiet: bool = False) -> None:
    from ..models.default import pull
    from .common import console, out

    path = pull(cfg.name, force=cfg.force, log=(lambda m: None) if quiet else (lambda m: console.print(m)))
    out.print(str(path))


def run_list(cfg: ListConfig, quiet: bool = False) -> None:
    from rich.table import Table

    from ..models.default import BUILTINS, builtin_path, is_pulled
    from .common import out

    t = Table("name", "cached", "path", "description")
    for n, b in BUILTINS.items():
        t.add_row(n, "yes" if is_pulled(n) else "no", str(builtin_path(n)), b.description)
    out.print(t)


def register(models_app, **_):
    from .options import command_from_config

    command_from_config(models_app, "pull", PullConfig, run_pull)
    command_from_config(models_app, "list", ListConfig, run_list)
