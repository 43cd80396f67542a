"""Entry point: ``finealign <verb>``. User errors print one line and exit 1; no tracebacks."""

from __future__ import annotations

import importlib
import sys

import typer

from ..errors import FinealignError

app = typer.Typer(name="finealign", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Align language models with fine-grained reward signals.")
models_app = typer.Typer(no_args_is_help=True, help="Pull and list built-in models.")
data_app = typer.Typer(no_args_is_help=True, help="Convert public data sets and inspect data files.")
train_app = typer.Typer(no_args_is_help=True, help="Trainers: token-rm, ppo, dpo, kto, followup-sft.")
annotate_app = typer.Typer(no_args_is_help=True, help="Human minimal-edit annotation app: serve, add-annotator, export, stats.")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(annotate_app, name="annotate")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluations: rm (a reward on a benchmark), token-rm (a token RM on "
                                                  "edit pairs), winrate (win rate vs a reference, validated judge).")
app.add_typer(eval_app, name="eval")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"finealign {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print finealign's version and exit.")) -> None:
    """Align language models with fine-grained reward signals."""

# One module per verb; each defines register(app, models_app, data_app, train_app).
VERB_MODULES = [
    "env", "models", "data", "generate", "quickstart", "score", "eval_rm", "label", "train_followup",
    "train_pref", "edit", "serve", "train_token_rm", "explain", "train_ppo",
    "annotate", "eval_winrate", "run", "report", "sim",
]

for _name in VERB_MODULES:
    importlib.import_module(f"finealign.cli.{_name}").register(app=app, models_app=models_app,
                                                                data_app=data_app, train_app=train_app,
                                                                annotate_app=annotate_app, eval_app=eval_app)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``warning: ...`` line on stderr (no source path or code line): finealign's own
    warnings are messages for the user, and library warnings that get through are shown the same way."""
    print(f"warning: {message}", file=file or sys.stderr)


def _checked_args(args: list[str]) -> list[str]:
    """``args`` with renamed commands replaced (one deprecation line each); a command that does not exist
    is refused here with the command it most likely meant (exit 2, as a usage error)."""
    from .common import console
    from .vocabulary import expand_list_flags, rename_commands, unknown_command

    args = rename_commands(args, lambda m: console.print(m, style="yellow", highlight=False, soft_wrap=True))
    root = typer.main.get_command(app)
    bad = unknown_command(args, root)
    if bad is not None and bad[1] is not None:
        print(f"error: no such command {bad[0]!r}; did you mean `finealign {bad[1]}`?", file=sys.stderr)
        raise SystemExit(2)
    return expand_list_flags(args, root)


def _run(argv: list[str] | None) -> None:
    """Run the app; under ``-q``/``--quiet`` the libraries' own progress bars are off too. Deprecation
    warnings that one library raises about another's calls (TRL calling transformers, PEFT calling
    transformers, ...) are not the user's to act on: the CLI does not print them."""
    import warnings

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category,
                                module=r"(transformers|trl|peft|accelerate|datasets|torch|huggingface_hub)(\.|$)")
    warnings.showwarning = _one_line_warning
    args = _checked_args(list(sys.argv[1:] if argv is None else argv))
    if "-q" in args or "--quiet" in args or "--no-progress" in args:  # (--no-progress: deprecated)
        from ..quiet import no_library_progress

        with no_library_progress():
            app(args=args, standalone_mode=True)
    else:
        app(args=args, standalone_mode=True)


def main(argv: list[str] | None = None) -> int:
    try:
        _run(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if argv is None:
            raise
        return code
    except FinealignError as e:
        print(f"error: {e}", file=sys.stderr)
        if argv is None:
            sys.exit(1)
        return 1
    except KeyboardInterrupt:  # outside a verb (each verb prints its own resume hint, cli/options.py)
        print("interrupted", file=sys.stderr)
        if argv is None:
            sys.exit(130)
        return 130
    return 0


if __name__ == "__main__":
    main()
