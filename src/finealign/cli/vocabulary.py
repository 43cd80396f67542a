"""One vocabulary for the command line: renamed commands keep working for a release with one deprecation
line, and a mistyped command suggests the command it resembles (``finealign eval-winrate`` -> ``finealign
eval winrate``).

Commands: every evaluation is under ``finealign eval`` (``eval rm``, ``eval token-rm``, ``eval winrate``);
the old ``eval-rm`` and ``eval-token-rm`` are the deprecated spellings in :data:`RENAMED_COMMANDS`.
Flags: a model the verb loads or trains is ``--model`` everywhere (``train ppo`` and ``sim make`` took
``--policy``, kept as a deprecated flag through :func:`finealign.config.setting`'s ``deprecated``).
"""

from __future__ import annotations

import difflib
import re

# old top-level spelling -> the command path that replaces it
RENAMED_COMMANDS: dict[str, tuple[str, ...]] = {
    "eval-rm": ("eval", "rm"),
    "eval-token-rm": ("eval", "token-rm"),
}


def rename_commands(args: list[str], warn) -> list[str]:
    """``args`` with a deprecated command spelling (the first word that is not an option) replaced by
    its new path; ``warn(message)`` gets one deprecation line when it was."""
    for i, a in enumerate(args):
        if a.startswith("-"):
            continue
        new = RENAMED_COMMANDS.get(a)
        if new is None:
            return args
        warn(f"warning: `finealign {a}` is deprecated and will be removed in the next release; "
             f"use `finealign {' '.join(new)}`")
        return [*args[:i], *new, *args[i + 1:]]
    return args


def command_paths(group) -> list[tuple[str, ...]]:
    """Every command path of a click group (groups and leaves), hidden ones left out."""
    out: list[tuple[str, ...]] = []

    def walk(g, prefix):
        for name, sub in getattr(g, "commands", {}).items():
            if getattr(sub, "hidden", False):
                continue
            out.append((*prefix, name))
            walk(sub, (*prefix, name))

    walk(group, ())
    return out


def _norm(s: str) -> str:
    return re.sub(r"[-_\s]+", " ", s.strip().lower())


def unknown_command(args: list[str], group) -> tuple[str, str | None] | None:
    """``(the unknown word, a suggested command path or None)`` when ``args`` names a command that does
    not exist (the first non-option words walked down the groups); None when the command exists."""
    prefix: list[str] = []
    g = group
    for a in args:
        if a.startswith("-"):
            continue
        subs = getattr(g, "commands", None)
        if subs is None:  # a leaf command: the rest are its arguments
            return None
        if a in subs:
            prefix.append(a)
            g = subs[a]
            continue
        return a, suggest(prefix, a, command_paths(group))
    return None


def suggest(prefix: list[str], word: str, paths: list[tuple[str, ...]]) -> str | None:
    """The command path ``prefix + word`` most likely meant: the same words with other separators
    (``eval-winrate``), a path whose last word is ``word`` (``finealign winrate``), else the closest by
    spelling."""
    query = _norm(" ".join([*prefix, word]))
    by_norm = {_norm(" ".join(p)): " ".join(p) for p in paths}
    if query in by_norm:
        return by_norm[query]
    ends = [" ".join(p) for p in paths if _norm(p[-1]) == _norm(word) and tuple(p[:len(prefix)]) == tuple(prefix)]
    if len(ends) == 1:
        return ends[0]
    close = difflib.get_close_matches(query, list(by_norm), n=1, cutoff=0.6)
    return by_norm[close[0]] if close else None


def expand_list_flags(args: list[str], group) -> list[str]:
    """``--tasks facts arithmetic`` -> ``--tasks facts --tasks arithmetic`` for every option of the named leaf
    command that takes several values (a list setting), so a list is given as the study's flags always took it
    (the values up to the next option; given twice, the last one wins, as with argparse); click repeats such an
    option instead. Other args are kept as they are."""
    g, i = group, 0
    while i < len(args) and getattr(g, "commands", None) is not None:
        if not args[i].startswith("-") and args[i] in g.commands:
            g = g.commands[args[i]]
        i += 1
    if getattr(g, "commands", None) is not None:
        return args
    multi = {name: p.opts[0] for p in getattr(g, "params", []) if getattr(p, "multiple", False) for name in p.opts}
    if not multi:
        return args
    rest: list[str] = []
    lists: dict[str, list[str]] = {}  # the option's first name -> its values (the last time it is given)
    current = None
    for a in args[i:]:
        if a.startswith("-"):
            current = multi.get(a)
            if current is not None:
                lists[current] = []
                continue
            rest.append(a)
        elif current is not None:
            lists[current].append(a)
        else:
            rest.append(a)
    # a list flag given no value stays bare, so click refuses it ("requires an argument")
    return [*args[:i], *rest, *(x for name, values in lists.items() for v in (values or [None])
                                for x in ((name, v) if v is not None else (name,)))]
