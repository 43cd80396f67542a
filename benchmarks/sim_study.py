"""The simulated-task study (the program is ``finealign.studies.sim_study``, also ``python -m finealign.pipeline.sim_study``).

    python benchmarks/sim_study.py --quick --out runs/sim_quick
"""

import sys

from finealign.errors import FinealignError
from finealign.studies.sim_study import main

if __name__ == "__main__":
    try:
        main(prog="benchmarks/sim_study.py")
    except FinealignError as e:  # bad input: one line, no traceback
        sys.exit(f"error: {e}")
