"""The fingerprint of a model (a spec or a loaded model) for output manifests (``data.manifest``): which
weights made an output, so a rerun with other weights is refused instead of mixed in. A model folder is
digested by the files a model is loaded from (``data.identity.is_model_file``: weights, configs, tokenizer),
so metrics or evaluations written beside a model later do not change it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.identity import fingerprint_path, is_model_file
from ..errors import FinealignError
from .loading import check_model, resolve_spec


def model_fingerprint(model: Any, *, pull: bool = True) -> dict:
    """The fingerprint of a model spec (built-in name, ``.gguf`` file, local folder, PEFT adapter
    folder with its base, hub id from the local cache) or of a loaded model (its ``name_or_path``).

    A hub id with no local copy gives ``{"spec": id}`` only (its revision cannot be read offline). Raises
    ``ModelError`` (``pull=True``) when the spec names no model that could load (``loading.check_model``).
    ``pull=False``: a built-in model is named by its pinned package (``{"spec", "builtin"}``) instead of
    being fetched and digested (a recipe's plan fingerprints models before any is loaded).
    """
    if not isinstance(model, (str, Path)):
        base = getattr(model, "get_base_model", lambda: model)()
        name = str(getattr(getattr(base, "config", None), "_name_or_path", "") or type(base).__name__)
        out = {"spec": name}
        if name and Path(name).is_dir():
            out.update(fingerprint_path(name, only=is_model_file))
        return out
    spec = str(model)
    if not pull:
        from .default import BUILTINS, DEFAULT_MODEL

        name = DEFAULT_MODEL if spec == "default" else spec
        if name in BUILTINS:
            b = BUILTINS[name]
            return {"spec": name, "builtin": b.wheel_sha256 or f"generated:{b.name}"}
    if spec.lower().endswith(".gguf") and Path(spec).expanduser().is_file():
        return {"spec": spec, **fingerprint_path(spec)}

    out = {"spec": spec}
    if pull:  # a model that cannot load fails here, before an output is tied to it (ModelError)
        src = check_model(spec)
    else:
        try:
            src = resolve_spec(spec)
        except FinealignError:  # a recipe's plan: a later stage may make it; loading it will say why
            return out
    if Path(src).is_dir():
        out.update(fingerprint_path(src, only=is_model_file))
        adapter = Path(src) / "adapter_config.json"
        if adapter.is_file():
            try:
                base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
            except ValueError:
                base = None
            if base and base != spec:
                out["base"] = model_fingerprint(base, pull=pull)
        return out
    try:
        from huggingface_hub import snapshot_download

        out.update(fingerprint_path(snapshot_download(spec, local_files_only=True), only=is_model_file))
    except Exception:  # not in the local cache: the spec is all we know
        pass
    return out
