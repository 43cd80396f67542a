"""Where the public data sets live: ``FINEALIGN_DATA_DIR``, else ``./shared/data`` or ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FinealignError


def data_root(required: bool = True) -> Path | None:
    env = os.environ.get("FINEALIGN_DATA_DIR")
    cands = [Path(env)] if env else []
    here = Path.cwd()
    cands += [here / "shared" / "data", here.parent / "shared" / "data"]
    repo = Path(__file__).resolve().parents[3]  # a source checkout: <repo>/src/finealign/data
    cands += [repo.parent / "shared" / "data", repo / "shared" / "data"]
    for c in cands:
        if c.is_dir():
            return c
    if required:
        raise FinealignError("public data folder not found: set FINEALIGN_DATA_DIR to the folder holding "
                             "hh_rlhf_harmless_base_test/, alpaca_eval_v2_gpt4turbo_annotations/, ...")
    return None
