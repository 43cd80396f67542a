"""The sim study moved to :mod:`finealign.studies.sim_study` (``finealign sim study``); this name keeps
``python -m finealign.pipeline.sim_study`` and ``from finealign.pipeline import sim_study`` working."""

from __future__ import annotations

import sys

from ..studies.sim_study import *  # noqa: F401,F403
from ..studies.sim_study import main

if __name__ == "__main__":
    from ..errors import FinealignError

    try:
        main(prog="python -m finealign.pipeline.sim_study")
    except FinealignError as e:  # bad input: one line, no traceback
        sys.exit(f"error: {e}")
