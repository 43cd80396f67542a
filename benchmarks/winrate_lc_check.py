"""Our win rate and length-controlled win rate vs the published AlpacaEval 2 leaderboard (8 systems).

Reads the shared AlpacaEval 2 annotations (GPT-4-turbo soft preferences vs gpt4_1106_preview) and the
leaderboard CSV; prints the ours-vs-published markdown table, then one JSON object.

    python benchmarks/winrate_lc_check.py [--data-dir ../shared/data] [--l2 0.1]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict


def main() -> None:
    from finealign.eval.lc_check import alpaca_eval_lc_check, check_markdown

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="shared data folder (default: FINEALIGN_DATA_DIR / ../shared/data)")
    ap.add_argument("--l2", type=float, default=0.1, help="ridge penalty of the instruction-difficulty fit")
    args = ap.parse_args()
    rows = alpaca_eval_lc_check(args.data_dir, l2=args.l2)
    print(check_markdown(rows))
    print(json.dumps({"l2": args.l2, "systems": [asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
