"""The files a pipeline run leaves behind, read by the runner (`pipeline.runner`) and by the report (no other imports).

``RUN_DIR/run.json``: the recipe, scale and stage list; ``RUN_DIR/STAGE/.finealign-stage.json``: the
done-marker of a finished stage (type, settings, fingerprint, seconds, summary);
``RUN_DIR/STAGE/.finealign-started.json``: the fingerprint a stage was started with.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = ".finealign-stage.json"
STARTED = ".finealign-started.json"
RUN_FILE = "run.json"


def read_marker(stage_dir: str | Path, name: str = MARKER) -> dict | None:
    """The JSON file ``name`` in ``stage_dir``, or None when it is absent or unreadable."""
    p = Path(stage_dir) / name
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
