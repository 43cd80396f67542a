"""The length-controlled win rate under separation (issue 27): 8 prompts where the longer answer always wins.

Six of the model's outputs are longer than the reference's and win, two are shorter and lose: raw win rate
75%. The GLM ``logit q = theta + phi * tanh(delta_len / std)`` then has no finite maximum-likelihood fit,
and an unpenalised optimiser stops anywhere (the number it printed depended on the length gaps alone).
Prints one JSON line per length set: raw win rate, LC win rate, SE, status, reason, coefficients.
Run it on another checkout (``PYTHONPATH=OTHER/src``) to see that version's answer.

    python benchmarks/lc_separation.py
"""

from __future__ import annotations

import json
import math

REF = [167, 217, 627, 1265, 661, 1201, 543, 435]
LENGTH_SETS = {
    "gaps-1": [166, 20, 1014, 1384, 790, 1410, 898, 634],
    "gaps-2": [106, 76, 699, 1494, 1157, 1278, 911, 525],
}


def main() -> None:
    from finealign.core import winrate as wr

    for name, out in LENGTH_SETS.items():
        pref = [1.0 if o > r else 0.0 for o, r in zip(out, REF)]  # the longer answer always wins
        lc = wr.lc_win_rate(pref, out, REF)

        def num(x):
            return None if x is None or not math.isfinite(x) else round(100 * x, 2)

        print(json.dumps({"lengths": name, "win_rate": num(sum(pref) / len(pref)), "lc_win_rate": num(lc.lc_win_rate),
                          "lc_se": num(lc.se), "status": getattr(lc, "status", "(no status)"),
                          "reason": getattr(lc, "reason", None),
                          "coef": {k: round(v, 2) for k, v in lc.coef.items()}}))


if __name__ == "__main__":
    main()
