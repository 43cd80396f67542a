"""Hugging Face hub ids: is the hub reachable, which ids are cached, which known name was meant.

A spec that is neither built in, a path nor in the local cache can only come from the hub. Whether
the hub can be reached is decided once per process and endpoint, in about a second: ``HF_HUB_OFFLINE``
(or ``TRANSFORMERS_OFFLINE``) set means no; otherwise one TCP connection to the endpoint
(``HF_ENDPOINT``, default ``https://huggingface.co``) with a one-second limit. When it cannot be
reached the loader fails at once, naming the closest built-in and cached names, instead of letting
the hub client retry for most of a minute.
"""

from __future__ import annotations

import difflib
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ModelError

__all__ = ["cached_hub_ids", "hub_reachable", "known_model_names", "suggest_models", "unknown_model_error"]

PROBE_TIMEOUT_S = 1.0
_TRUE = ("1", "true", "yes", "on")
_HUB_VERDICTS: dict[str, bool] = {}  # endpoint -> reachable, decided once per process


def offline_requested() -> bool:
    """True when the environment asks for offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


def _probe(host: str, port: int, timeout: float) -> bool:
    """One TCP connection to ``host:port`` within ``timeout`` seconds (name resolution included: it
    runs in a daemon thread, since ``getaddrinfo`` itself has no time limit)."""
    ok: list[bool] = []

    def attempt():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=attempt, name="finealign-hub-probe", daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


def hub_reachable() -> bool:
    """Whether the hub endpoint answers; decided once per process and endpoint (at most ~1 s)."""
    if offline_requested():
        return False
    endpoint = hub_endpoint()
    if endpoint not in _HUB_VERDICTS:
        url = urlsplit(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        _HUB_VERDICTS[endpoint] = bool(url.hostname) and _probe(url.hostname, port, PROBE_TIMEOUT_S)
    return _HUB_VERDICTS[endpoint]


def hub_cache_dir() -> Path:
    """The hub cache folder, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def cached_hub_ids() -> list[str]:
    """Model ids present in the local hub cache (folders ``models--ORG--NAME``)."""
    root = hub_cache_dir()
    try:
        names = sorted(p.name for p in root.iterdir() if p.name.startswith("models--"))
    except OSError:
        return []
    return [n[len("models--"):].replace("--", "/") for n in names]


def known_model_names() -> list[str]:
    """Every name a spec could have meant: the built-ins, ``default`` and the cached hub ids."""
    from .default import BUILTINS

    return [*BUILTINS, "default", *cached_hub_ids()]


def suggest_models(spec: str, names: list[str] | None = None, n: int = 3) -> list[str]:
    """Up to ``n`` known names closest to ``spec`` (case-insensitive, ``difflib`` ratio >= 0.6)."""
    names = known_model_names() if names is None else names
    by_lower = {x.lower(): x for x in names}
    found = [by_lower[c] for c in difflib.get_close_matches(spec.lower(), list(by_lower), n=n, cutoff=0.6)]
    if not found and "/" in spec:  # a hub id: compare the name part alone too
        tails = {x.rsplit("/", 1)[-1].lower(): x for x in names}
        found = [tails[c] for c in difflib.get_close_matches(spec.rsplit("/", 1)[-1].lower(), list(tails), n=n)]
    return found


def unknown_model_error(spec: str, why: str) -> ModelError:
    """The one-line error for a spec that names no model: ``why``, then the closest known names."""
    from .default import BUILTINS

    hint = suggest_models(spec)
    tail = (f"; did you mean {', '.join(repr(h) for h in hint)}?" if hint
            else f"; built-in models: {', '.join(BUILTINS)}")
    return ModelError(f"{spec}: not a built-in model, a local directory or a .gguf file, and not in the Hugging "
                      f"Face cache ({hub_cache_dir()}); {why}{tail}")
