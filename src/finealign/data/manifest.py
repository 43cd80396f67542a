"""What made an output: one sidecar manifest beside every resumable output and cache.

A resumable output (``generate``'s responses, ``score``'s scored records, the score caches of
``eval-rm`` and ``label``, ``edit``'s edits, a trainer's output folder) is tied to the settings
that made it. Before anything is appended, ``prepare_output`` compares this run's settings with
the ones recorded beside the output and refuses, naming every differing setting, to resume under
different ones; ``overwrite=True`` starts afresh (the output, its manifest and the listed side
files are deleted). The manifest is written (atomically) before the first record::

    OUT.jsonl                 ->  OUT.jsonl.manifest.json
    OUT/ (a folder)           ->  OUT/finealign_manifest.json
    {"format": "finealign-manifest", "version": 1, "verb": "generate", "settings": {...}}

Settings hold plain values and *fingerprints*: ``models.fingerprint.model_fingerprint`` (a model spec or a loaded
model) and ``fingerprint_path`` (a file or folder: weights, a token RM, a follow-up file, a data
file). A fingerprint digests every file's relative name and content: files up to 64 MiB are
hashed (sha256), larger ones are stamped by size, modification time and inode (a retrained model gets
a new stamp; so does a copy), and a file in the Hugging Face cache is named by its blob's sha256
already (``data.identity``; ``docs/output-identity.md``). So a token RM retrained at the same path, another model
behind the same name, or another temperature cannot resume an output made before.

A cache holding the scores of several scorers (``merge=True``) records one fingerprint per scorer
spec; a new spec is added, a known spec must match.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..errors import FinealignError
from .identity import FOLDER_MANIFEST, HASH_LIMIT, fingerprint_path

FORMAT = "finealign-manifest"
VERSION = 1

__all__ = ["FOLDER_MANIFEST", "HASH_LIMIT", "fingerprint_path", "manifest_path", "prepare_output",
           "read_manifest"]


def manifest_path(out: str | Path) -> Path:
    """Where the manifest of ``out`` lives: ``OUT.manifest.json`` beside a file,
    ``OUT/finealign_manifest.json`` in a folder."""
    out = Path(out)
    if out.is_dir():
        return out / FOLDER_MANIFEST
    return out.with_name(out.name + ".manifest.json")


def read_manifest(out: str | Path) -> dict | None:
    """The manifest of ``out`` (``None`` when there is none). Raises ``FinealignError`` when damaged."""
    p = manifest_path(out)
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FinealignError(f"{p}: damaged manifest ({e}); rerun with --overwrite to start afresh") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("settings"), dict):
        raise FinealignError(f"{p}: not a finealign manifest; rerun with --overwrite to start afresh")
    return m


def _has_content(out: Path) -> bool:
    if out.is_file():
        return out.stat().st_size > 0
    if out.is_dir():
        return any(not p.name.startswith(".") and p.name != FOLDER_MANIFEST for p in out.iterdir())
    return False


def _short(v: Any) -> str:
    if v is None:
        return "unset"
    if isinstance(v, dict) and "digest" in v:
        return f"{v.get('spec', '')} (fingerprint {v['digest']})".strip()
    text = json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


def _differences(old: dict, new: dict, keys: Sequence[str], path: tuple = ()) -> list[str]:
    """One line per differing setting; a setting whose value is a record of several parts (a scorer's spec and
    model) names the parts that differ: ``scorer (spec): made with "a", this run has "b"``."""
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if _canon(a) == _canon(b):
            continue
        if isinstance(a, dict) and isinstance(b, dict) and "digest" not in a and "digest" not in b:
            out += _differences(a, b, sorted(set(a) | set(b)), path + (str(k),))
        else:
            where = (*path, str(k))
            label = where[0] + (f" ({'.'.join(where[1:])})" if len(where) > 1 else "")
            out.append(f"{label}: made with {_short(a)}, this run has {_short(b)}")
    return out


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)


def _write(path: Path, manifest: dict) -> None:
    from .io import write_json

    write_json(path, manifest)


def prepare_output(out: str | Path, verb: str, settings: dict, *, overwrite: bool = False, merge: bool = False,
                   side_files: Sequence[str | Path] = (), has_content: bool | None = None,
                   folder: bool = False, check_only: bool = False) -> None:
    """Tie ``out`` to ``settings`` before a run appends to it (see the module docstring).

    ``overwrite``: delete ``out`` (a file; for a folder only the manifest), its manifest and every
    path in ``side_files`` (files, or folders inside a folder ``out``), then record ``settings``.
    ``merge``: ``settings`` maps names (scorer specs) to fingerprints; names already recorded must
    match, new ones are added. ``has_content``: whether ``out`` holds something to resume (default:
    a non-empty file, or a folder with entries). ``folder``: ``out`` is a folder (created here). An
    output with nothing to resume simply gets this run's manifest. ``check_only``: refuse as above
    but change nothing on disk (a job that computes first and writes later checks early). Raises ``FinealignError`` naming every differing
    setting, or when ``out`` has content but no manifest (made by an older finealign or by hand).
    """
    out = Path(out)
    if check_only and overwrite:
        return
    if folder and not check_only:
        out.mkdir(parents=True, exist_ok=True)
    mpath = manifest_path(out)
    settings = json.loads(_canon(settings))  # plain JSON values, as they will read back
    if overwrite:
        for p in [out, mpath, *map(Path, side_files)]:
            if p.is_dir() and p != out:
                shutil.rmtree(p)
            elif p.is_file() or p.is_symlink():
                p.unlink()
    content = False if overwrite else _has_content(out) if has_content is None else has_content
    old = read_manifest(out) if content else None
    if old is None:
        if content:
            raise FinealignError(f"{out}: exists with no record of the settings that made it ({mpath.name} is "
                                 "missing: written by an older finealign or by hand); rerun with --overwrite to "
                                 "start afresh, or choose another output")
        if not check_only:
            out.parent.mkdir(parents=True, exist_ok=True)
            _write(mpath, {"format": FORMAT, "version": VERSION, "verb": verb, "settings": settings})
        return
    recorded = old["settings"]
    if old.get("verb") != verb:
        raise FinealignError(f"{out}: made by `finealign {old.get('verb')}`, not `{verb}`; rerun with --overwrite "
                             "to start afresh, or choose another output")
    keys = [k for k in settings if k in recorded] if merge else sorted(set(recorded) | set(settings))
    diff = _differences(recorded, settings, keys)
    if diff:
        raise FinealignError(f"{out}: cannot resume, the settings differ from the run that made it: "
                             + "; ".join(diff) + ". Rerun with --overwrite to start afresh, or choose another output")
    if merge and not check_only and any(k not in recorded for k in settings):
        _write(mpath, {**old, "settings": {**recorded, **settings}})
