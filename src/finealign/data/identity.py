"""One output identity: which settings and which inputs made an output (see ``docs/output-identity.md``).

The identity of an output is

* the **identity fields** of the settings dataclass that made it: every field, except those marked on
  the field itself (``config.setting(..., identity=False)``) as changing nothing the output holds
  (device, batch size, logging cadence, engine, output path, ...). Two more marks: ``"grows"`` (a
  larger value extends the output when the run resumes: a trainer's ``steps``) and ``"derived"`` (the
  part of the output that depends on it is recomputed on every run, so a resume may change it);
* the **fingerprints** of every input the settings name (fields marked ``reads="file"``, ``"model"``,
  ``"scorer"``, ``"editor"`` or ``"judge"``): a file or folder is digested by :func:`fingerprint_path`
  (every file's relative name and content: a sha256 of files up to :data:`HASH_LIMIT` bytes, a stamp of
  size, modification time and inode for larger ones), a model spec by ``models.fingerprint``; the specs
  are read by ``models.inputs`` (files and models) and ``rewards.inputs`` (``input_fingerprints``,
  ``output_identity``: scorers, editors, judges too), the layers above this one.

Every resumable output asks the same questions of it: may a resumed run append here
(:func:`resumable_fields`: the fields a resume may change), is a recipe stage done, did an input change
(:func:`differences` names what changed), and which verb made a folder (:func:`check_verb`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import FinealignError

HASH_LIMIT = 64 * 1024 * 1024  # bytes: larger files are stamped (size + mtime + inode), smaller ones hashed
GROWS, DERIVED = "grows", "derived"
READS = ("file", "model", "scorer", "editor", "judge")
FOLDER_MANIFEST = "finealign_manifest.json"
_SKIP_DIRS = re.compile(r"^(\..*|__pycache__|checkpoint-\d+|checkpoints?|runs)$")
_BLOB = re.compile(r"^[0-9a-f]{40,64}$")

__all__ = ["DERIVED", "FOLDER_MANIFEST", "GROWS", "HASH_LIMIT", "check_verb", "data_fingerprint", "differences",
           "fingerprint_path", "identity_settings", "keyed_fields", "non_identity_fields", "reads_fields",
           "refuse_changed_records", "resumable_fields", "resume_identity", "role"]


# ---------------------------------------------------------------------------------------------- the marks


def role(f: dataclasses.Field) -> bool | str:
    """A field's mark: True (identity), False (changes nothing the output holds), ``"grows"`` or ``"derived"``."""
    return (f.metadata or {}).get("identity", True)


def _fields(classes: Iterable[type | None]) -> list[dataclasses.Field]:
    seen, out = set(), []
    for cls in classes:
        if cls is None:
            continue
        for f in dataclasses.fields(cls):
            if f.name not in seen:
                seen.add(f.name)
                out.append(f)
    return out


def non_identity_fields(*classes: type | None) -> frozenset[str]:
    """Names of the fields of ``classes`` marked ``identity=False``."""
    return frozenset(f.name for f in _fields(classes) if role(f) is False)


def resumable_fields(*classes: type | None) -> frozenset[str]:
    """Names of the fields a resumed run may change: not identity, ``grows`` and ``derived`` ones."""
    return frozenset(f.name for f in _fields(classes) if role(f) is not True)


def reads_fields(*classes: type | None) -> dict[str, str]:
    """{field: what it reads} for the fields of ``classes`` that name an input (``reads=...``)."""
    return {f.name: f.metadata["reads"] for f in _fields(classes) if (f.metadata or {}).get("reads")}


def plain(v: Any) -> Any:
    """JSON-safe value (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(v, default=str))


def keyed_fields(*classes: type | None) -> frozenset[str]:
    """Names of the fields of ``classes`` marked ``keyed=True`` (``config.setting``): the output holds one record
    per record (or sample) of what they name, so a resume with another value appends what is new."""
    return frozenset(f.name for f in _fields(classes) if (f.metadata or {}).get("keyed"))


def resume_identity(cls: type, values: dict) -> dict:
    """The settings a resumable output's manifest records (``data.manifest.prepare_output``), derived from the
    marks of its verb's settings class ``cls`` (the verb table's row): one entry per identity field (mark
    True) that is not keyed, its value taken from ``values`` (an input's fingerprint for a ``reads`` field).
    A library function that takes objects (a loaded model, an editor) supplies their fingerprints here, so a
    new identity field of the verb's settings is a new manifest entry, never a hand-kept list.

    ``resume_identity(GenerateConfig, {"model": fp, "temperature": 0.7, ...})`` -> the 7 entries of a generate
    manifest (``prompts`` and ``k`` are keyed: new ones append). Raises ``KeyError`` naming the identity fields
    ``values`` lacks and the names in it that are not identity fields of ``cls``."""
    keyed = keyed_fields(cls)
    names = [f.name for f in dataclasses.fields(cls) if role(f) is True and f.name not in keyed]
    missing, extra = [n for n in names if n not in values], sorted(set(values) - set(names))
    if missing or extra:
        raise KeyError(f"{cls.__name__}'s manifest: values lack {missing or 'nothing'}; not identity fields: "
                       f"{extra or 'none'}")
    return {n: plain(values[n]) for n in names}


def refuse_changed_records(out: str | Path, made_from: dict, now: dict, what: str) -> None:
    """Refuse to resume over a keyed input whose record changed under its key (``keyed`` fields append what is
    new; a changed record would leave stale rows behind). ``made_from``: {key: what the output's rows were made
    from}; ``now``: {key: the input's record today}; keys in only one of them are fine. ``what``: the record's
    name in the message (``prompt``). Raises ``FinealignError`` naming the first changed keys."""
    def canon(v: Any) -> str:
        return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)

    changed = [k for k, v in made_from.items() if k in now and canon(v) != canon(now[k])]
    if changed:
        shown = ", ".join(repr(c) for c in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise FinealignError(f"{out}: cannot resume, {len(changed)} {what}(s) changed since the output was made from "
                             f"them (id {shown}); rerun with --overwrite to start afresh, or choose another output")


def identity_settings(cfg: Any, roles: tuple = (True,)) -> dict:
    """{field: plain value} of ``cfg``'s fields whose mark is in ``roles`` (default: the identity fields)."""
    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if role(f) in roles}


# ---------------------------------------------------------------------------------------------- fingerprints


def _file_digest(p: Path) -> str:
    target = p.resolve()
    if p.is_symlink() and _BLOB.match(target.name):  # the Hugging Face cache names blobs by content hash
        return "blob:" + target.name
    st = target.stat()
    if st.st_size > HASH_LIMIT:
        return f"stamp:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    h = hashlib.sha256()
    with open(target, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


_MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".model", ".tiktoken", ".msgpack", ".h5", ".py",
                   ".jinja")
_MODEL_NAMES = ("vocab.json", "vocab.txt", "merges.txt", "special_tokens_map.json", "added_tokens.json")


def is_model_file(name: str) -> bool:
    """A file a model is loaded from: weights, configs (``*config.json``), tokenizer files. A model folder's
    other files (metrics, evaluations, samples, reports written beside the model) change no weight."""
    base = name.rsplit("/", 1)[-1]
    return (base.endswith(_MODEL_SUFFIXES) or base.endswith("config.json") or base.startswith("tokenizer")
            or base in _MODEL_NAMES)


def fingerprint_path(path: str | Path, *, only: Callable[[str], bool] | None = None) -> dict:
    """``{"digest", "files", "bytes"}`` of a file or a folder (recursively; hidden entries,
    ``checkpoint-N``/``checkpoints``/``runs`` folders and manifests left out; in a folder, only the files
    whose relative name ``only`` accepts, e.g. :func:`is_model_file`); ``{"missing": path}`` when it does
    not exist. Files up to :data:`HASH_LIMIT` bytes are hashed (sha256), larger ones stamped (size,
    modification time in ns, inode); a Hugging Face cache blob is named by its hash."""
    path = Path(path).expanduser()
    if not path.exists():
        return {"missing": str(path)}
    if path.is_file():
        files = [(path.name, path)]
    else:
        files = []
        for root, dirs, names in os.walk(path, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not _SKIP_DIRS.match(d))
            for n in sorted(names):
                if n.startswith(".") or n.endswith(".manifest.json") or n == FOLDER_MANIFEST:
                    continue
                p = Path(root) / n
                rel = p.relative_to(path).as_posix()
                if only is None or only(rel):
                    files.append((rel, p))
    h = hashlib.sha256()
    total = 0
    for rel, p in files:
        total += p.stat().st_size
        h.update(f"{rel}\0{_file_digest(p)}\n".encode())
    return {"digest": h.hexdigest()[:16], "files": len(files), "bytes": total}


def data_fingerprint(value: str) -> dict:
    """A data file or folder (``NAME[a:b]`` slices allowed); a data set name (no such path) by its name."""
    base = str(value).split("[")[0]
    p = Path(base).expanduser()
    if not p.exists():
        return {"source": str(value)}
    return {"source": str(value), **fingerprint_path(p)}


# ---------------------------------------------------------------------------------------------- comparing


def _short(v: Any) -> str:
    if isinstance(v, dict) and any(k in v for k in ("spec", "source", "missing")):
        name = v.get("spec") or v.get("source") or v.get("missing") or ""
        digest = v.get("digest") or next((x["digest"] for x in v.values() if isinstance(x, dict) and "digest" in x),
                                         None)
        what = "missing" if "missing" in v else f"fingerprint {digest}" if digest else ""
        return f"{name} ({what})" if what else str(name)
    text = json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)


def differences(old: dict, new: dict, keys: Iterable[str] | None = None) -> list[str]:
    """``name: was X, now Y`` for every key whose value differs (fingerprints shown by name and digest)."""
    keys = sorted(set(old) | set(new)) if keys is None else keys
    return [f"{k}: was {_short(old.get(k))}, now {_short(new.get(k))}"
            for k in keys if _canon(old.get(k)) != _canon(new.get(k))]


def grew(old: dict, new: dict) -> bool:
    """Every value of ``new`` is at least its value in ``old`` (the ``grows`` fields of a resumed run)."""
    try:
        return all(old.get(k) is None or (v is not None and v >= old[k]) for k, v in new.items())
    except TypeError:
        return False


# ---------------------------------------------------------------------------------------------- which verb


def _folder_record(out: Path) -> dict | None:
    p = out / FOLDER_MANIFEST
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def read_verb(out: str | Path) -> str | None:
    """The verb recorded in the folder manifest of ``out`` (None: no manifest, or an unreadable one)."""
    return (_folder_record(Path(out)) or {}).get("verb")


def _holds_work(out: Path) -> bool:
    """Whether folder ``out`` holds anything besides its manifest and hidden files."""
    try:
        return any(not p.name.startswith(".") and p.name != FOLDER_MANIFEST for p in out.iterdir())
    except OSError:
        return False


def check_verb(out: str | Path, verb: str, *, inputs: dict | None = None, claim: bool = True) -> None:
    """Refuse an output folder made by another verb, naming it, or one whose recorded ``inputs`` (input
    fingerprints, :func:`input_fingerprints`) differ from this run's, naming them. ``claim``: record ``verb``
    (and ``inputs``) in the folder's manifest when it has none (the folder is created when missing).
    Raises ``FinealignError``."""
    out = Path(out)
    rec = _folder_record(out)
    made_by = (rec or {}).get("verb")
    if made_by is not None and made_by != verb:
        raise FinealignError(f"{out}: made by `finealign {made_by}`, not `finealign {verb}`; choose another output")
    recorded = (rec or {}).get("inputs")
    if recorded is not None and not _holds_work(out):  # a run that failed before writing anything: nothing to
        recorded, rec = None, {**rec, "inputs": None}  # resume, so a corrected rerun claims the folder afresh
    if inputs is not None and recorded is not None:
        diff = differences(recorded, plain(inputs))
        if diff:
            raise FinealignError(f"{out}: cannot resume, an input changed since this run started ("
                                 + "; ".join(diff) + "); choose another output, or restore the input")
    if claim and (rec is None or (inputs is not None and recorded is None)):
        from .io import write_json

        out.mkdir(parents=True, exist_ok=True)
        base = rec or {"format": "finealign-manifest", "version": 1, "verb": verb, "settings": {}}
        write_json(out / FOLDER_MANIFEST, {**base, **({"inputs": plain(inputs)} if inputs is not None else {})})
