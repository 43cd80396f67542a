"""A scorer that raises on one kind of record, for the sharded-run tests (not a test module).

``fault:`` scores like ``length`` but raises ``ValueError`` for a response containing ``MARKER``;
``slow:`` scores like ``length`` after sleeping ``SLOW_S`` per call (a run long enough to kill).
``register()`` adds both kinds; Ray workers run it at start-up through Ray's
``runtime_env={"worker_process_setup_hook": "fault_scorer.register"}``.
"""

from __future__ import annotations

MARKER = "BOOM"
SLOW_S = 0.4


def register() -> None:
    from finealign.rewards.base import LengthScorer, register_scorer

    class FaultScorer(LengthScorer):
        name = "fault"

        def score(self, prompts, responses):
            for r in responses:
                if MARKER in r:
                    raise ValueError("cannot score a response holding the test marker")
            return super().score(prompts, responses)

    class SlowScorer(LengthScorer):
        name = "slow"

        def score(self, prompts, responses):
            import time

            time.sleep(SLOW_S)
            return super().score(prompts, responses)

    register_scorer("fault")(lambda arg=None, **_: FaultScorer())
    register_scorer("slow")(lambda arg=None, **_: SlowScorer())
