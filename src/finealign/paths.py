"""Where finealign keeps its caches: ``FINEALIGN_HOME`` (default ``~/.cache/finealign``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root; created on first use."""
    root = Path(os.environ.get("FINEALIGN_HOME", "~/.cache/finealign")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    d = home() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d
