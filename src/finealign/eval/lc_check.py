"""Check our win rate and length-controlled win rate against the published AlpacaEval 2 leaderboard.

The shared AlpacaEval 2 annotations hold GPT-4-turbo's soft preferences (``preference - 1`` =
P(evaluated output better)) for 8 systems against the ``gpt4_1106_preview`` reference on the same 805
instructions; the leaderboard CSV holds their published ``win_rate`` and ``length_controlled_winrate``.
``alpaca_eval_lc_check`` recomputes both from the annotations with ``finealign.core.winrate`` (the
difficulty term estimated from the 8 systems), and also the single-system LC (no difficulty term, what
``finealign eval winrate`` computes for one model).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import winrate as wr
from ..errors import FinealignError

__all__ = ["SystemCheck", "alpaca_eval_lc_check", "check_markdown"]


@dataclass(frozen=True)
class SystemCheck:
    """One system, rates in percent: ours vs published; ``lc_single``: our LC without the difficulty term."""

    system: str
    n: int
    win_rate: float
    published_win_rate: float
    lc_win_rate: float
    lc_se: float
    lc_single: float
    published_lc: float
    #: ``core.winrate`` status of our LC with / without the difficulty term (``ok``, ``unstable``, ``not estimable``)
    lc_status: str = "ok"
    lc_single_status: str = "ok"


def alpaca_eval_lc_check(data_dir: str | Path | None = None, *, l2: float = 0.1) -> list[SystemCheck]:
    """Recompute every annotated system's win rate and LC win rate; sorted by published LC, best first.

    ``data_dir``: the shared data folder (default ``data_root()``). Raises ``FinealignError`` when the
    systems do not share the same instructions or a system is not on the leaderboard.
    """
    from ..data.adapters import alpaca_eval_leaderboard, dataset_path, load_dataset

    src = dataset_path("alpaca-eval", data_dir) if data_dir is not None else None
    per: dict[str, dict[str, tuple[float, int, int]]] = defaultdict(dict)
    for r in load_dataset("alpaca-eval", src):
        p2 = r.meta["preference"] - 1.0  # P(evaluated output, output_2, preferred)
        out, ref = (r.chosen, r.rejected) if p2 > 0.5 else (r.rejected, r.chosen)
        per[r.subset][r.prompt] = (p2, len(out), len(ref))
    systems = sorted(per)
    instructions = sorted(per[systems[0]])
    for s in systems:
        if sorted(per[s]) != instructions:
            raise FinealignError(f"alpaca-eval: system {s} was judged on other instructions than {systems[0]}")
    P = np.array([[per[s][x][0] for x in instructions] for s in systems])
    L = np.array([[per[s][x][1] for x in instructions] for s in systems], dtype=float)
    ref = np.array([per[systems[0]][x][2] for x in instructions], dtype=float)
    board = alpaca_eval_leaderboard(data_dir)
    board_lc = alpaca_eval_leaderboard(data_dir, "length_controlled_winrate")
    missing = [s for s in systems if s not in board or s not in board_lc]
    if missing:
        raise FinealignError(f"alpaca-eval: systems not on the leaderboard: {', '.join(missing)}")
    lcs = wr.lc_win_rates(P, L, ref, l2=l2)
    out = []
    for i, s in enumerate(systems):
        single = wr.lc_win_rate(P[i], L[i], ref)
        out.append(SystemCheck(s, len(instructions), 100 * float(P[i].mean()), board[s], 100 * lcs[i].lc_win_rate,
                               100 * lcs[i].se, 100 * single.lc_win_rate, board_lc[s], lcs[i].status, single.status))
    return sorted(out, key=lambda c: -c.published_lc)


def check_markdown(rows: list[SystemCheck]) -> str:
    """A markdown table of ``alpaca_eval_lc_check`` with the largest deviations and Spearman's rho."""
    from ..core.stats import spearman

    lines = ["| system | win rate: ours | published | LC: ours (SE) | published LC | LC diff | "
             "LC without difficulty term |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in rows:
        lines.append(f"| {c.system} | {c.win_rate:.2f} | {c.published_win_rate:.2f} | {c.lc_win_rate:.2f} "
                     f"({c.lc_se:.2f}) | {c.published_lc:.2f} | {c.lc_win_rate - c.published_lc:+.2f} | "
                     f"{c.lc_single:.2f} |")
    wr_dev = max(abs(c.win_rate - c.published_win_rate) for c in rows)
    lc_dev = max(abs(c.lc_win_rate - c.published_lc) for c in rows)
    rho = spearman(np.array([c.lc_win_rate for c in rows]), np.array([c.published_lc for c in rows]))
    rho1 = spearman(np.array([c.lc_single for c in rows]), np.array([c.published_lc for c in rows]))
    status = sorted({c.lc_status for c in rows} | {c.lc_single_status for c in rows})
    lines += ["", f"max |win rate - published| = {wr_dev:.4f} points; max |LC - published LC| = {lc_dev:.2f} points; "
              f"Spearman(ours LC, published LC) = {rho:.3f} (without the difficulty term: {rho1:.3f}); "
              f"LC status of all {len(rows)} systems, both fits: {', '.join(status)}"]
    return "\n".join(lines) + "\n"
