"""``finealign models pull|list``."""

from __future__ import annotations

import typer


def register(models_app, **_):
    @models_app.command("pull")
    def pull_cmd(name: str = typer.Argument("smollm2-135m-instruct", help="Built-in model name."),
                 force: bool = typer.Option(False, "--force", help="Download and convert again.")):
        """Download, verify (sha256) and cache a built-in model as safetensors."""
        from ..models.default import pull
        from .common import console, out

        path = pull(name, force=force, log=lambda m: console.print(m))
        out.print(str(path))

    @models_app.command("list")
    def list_cmd():
        """List the built-in models and whether they are cached."""
        from rich.table import Table

        from ..models.default import BUILTINS, builtin_path, is_pulled
        from .common import out

        t = Table("name", "cached", "path", "description")
        for n, b in BUILTINS.items():
            t.add_row(n, "yes" if is_pulled(n) else "no", str(builtin_path(n)), b.description)
        out.print(t)
