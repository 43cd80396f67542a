"""Every pair in both orders, each verdict cached with the path that gave it (``judge_orders``).

``judge_orders`` shows every pair in both orders (``first, second`` and ``second, first``) and caches each
verdict in a ``JsonlAppender`` file, so a rerun resumes and a failure loses nothing done. A cached verdict
is reused only by the same judge with the same prompt template: its key hashes the judge's ``identity``
(the endpoint, model and every option that changes a verdict), the caller's judge label, the template's
id (``judges.template_id()``: version and a hash of the system message and template text) and the three
texts; the stored ``identity`` and ``template`` are checked again on lookup. Verdicts cached by other
judges or templates in the same file are left alone and never read back.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from ..data.records import Prompt
from .verdicts import PATHS, JudgeError, Verdict

__all__ = ["OrderedVerdicts", "VerdictCache", "judge_both_orders", "judge_orders", "path_counts", "paths_summary",
           "verdict_key"]


def verdict_key(judge_id: str, prompt: Prompt, first: str, second: str, *, identity: str = "",
                template: str = "") -> str:
    """Cache key of one ordered comparison: a hash of the judge's label and identity, the template id and the texts."""
    raw = json.dumps([judge_id, identity, template, prompt, first, second], ensure_ascii=False)
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()[:24]


class VerdictCache:
    """The per-comparison verdict cache: a ``JsonlAppender`` file of
    ``{"key", "judge", "identity", "template", "p", "path"}`` lines.

    Opening it reads the verdicts written so far (a torn last line left by a killed run is dropped);
    ``append`` writes and flushes one line, so a failure never loses a finished verdict. ``get`` returns a
    verdict only when its key, judge identity and template all match.
    """

    def __init__(self, path):
        from ..data.io import JsonlAppender

        self.path = Path(path)
        self._app = JsonlAppender(self.path, key=lambda o: o["key"])
        self.entries: dict[str, dict] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                o = json.loads(line)
                self.entries[o["key"]] = o

    @property
    def values(self) -> dict[str, float]:
        """{key: p} of every cached verdict (all judges)."""
        return {k: float(o["p"]) for k, o in self.entries.items()}

    def get(self, key: str, identity: str, template: str) -> Verdict | None:
        o = self.entries.get(key)
        if o is None or o.get("identity") != identity or o.get("template") != template or o.get("path") not in PATHS:
            return None
        return Verdict(float(o["p"]), o["path"])

    def append(self, obj: dict) -> None:
        self._app.append(obj)
        self.entries[obj["key"]] = obj

    def close(self) -> None:
        self._app.close()


class OrderedVerdicts(NamedTuple):
    """Per pair (N,): P(``a`` better) with ``a`` shown first / second, and the path of each of those verdicts."""

    first: list[float]
    second: list[float]
    first_paths: list[str]
    second_paths: list[str]

    def path_counts(self, symmetric: bool = False) -> dict[str, int]:
        """How many ordered comparisons each path gave (one per pair for order-free judges)."""
        return path_counts(self.first_paths if symmetric else self.first_paths + self.second_paths)


def path_counts(paths: Sequence[str]) -> dict[str, int]:
    """{path: count} over ``verdicts.PATHS`` (zeros included, so every report shows each path)."""
    return {p: sum(x == p for x in paths) for p in PATHS}


PATH_NAMES = {"logprob": "log-probability", "parsed": "parsed", "tie": "tie", "score": "score"}


def paths_summary(counts: dict | None) -> str:
    """``"16 verdicts: 14 log-probability, 2 parsed, 0 tie"`` (the score path only where it was used)."""
    if not counts:
        return "verdict paths not recorded"
    total = sum(int(v) for v in counts.values())
    shown = [k for k in ("logprob", "parsed", "tie") if k in counts]
    if counts.get("score"):
        shown.append("score")
    return f"{total} verdicts: " + ", ".join(f"{int(counts.get(k, 0))} {PATH_NAMES[k]}" for k in shown)


def judge_orders(judge, prompts: Sequence[Prompt], a: Sequence[str], b: Sequence[str], *,
                 cache: VerdictCache | None = None, judge_id: str | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> OrderedVerdicts:
    """P(``a[i]`` better) with ``a`` shown first, and with ``a`` shown second, with each verdict's path.

    Each ordered comparison is looked up in, and appended to, ``cache`` (``p`` = P(the text shown first is
    better)). Symmetric judges are asked once per pair (then the second list equals the first). ``judge``
    is a ``judges.Judge``. ``on_progress(done, total)`` counts comparisons, cached ones included.
    Raises ``JudgeError`` when the judge returns something that is not one probability per pair.
    """
    jid = judge_id or judge.name
    ident, tmpl = judge.identity, getattr(judge, "template", "")
    n = len(prompts)
    if not (len(a) == len(b) == n):
        raise ValueError(f"prompts, a and b differ in length: {n}, {len(a)}, {len(b)}")
    asks = [(i, 0) for i in range(n)] + ([] if judge.symmetric else [(i, 1) for i in range(n)])

    def key(i, order):
        x, y = (a[i], b[i]) if order == 0 else (b[i], a[i])
        return verdict_key(jid, prompts[i], x, y, identity=ident, template=tmpl)

    done: dict[str, Verdict] = {}
    if cache is not None:
        for i, o in asks:
            v = cache.get(key(i, o), ident, tmpl)
            if v is not None:
                done[key(i, o)] = v
    todo = [(i, o) for i, o in asks if key(i, o) not in done]
    count = len(asks) - len(todo)
    if on_progress:
        on_progress(count, len(asks))
    step = max(1, judge.batch_size)
    for s in range(0, len(todo), step):
        chunk = todo[s:s + step]
        verdicts = judge.verdicts_iter([prompts[i] for i, _ in chunk], [a[i] if o == 0 else b[i] for i, o in chunk],
                                       [b[i] if o == 0 else a[i] for i, o in chunk])
        for j, v in verdicts:  # each verdict is cached as it arrives
            i, o = chunk[j]
            p = float(v.p)
            if not (math.isfinite(p) and 0.0 <= p <= 1.0):
                raise JudgeError(f"judge {judge.name!r} returned {p!r}, not a probability")
            k = key(i, o)
            done[k] = Verdict(p, v.path)
            if cache is not None:
                cache.append({"key": k, "judge": jid, "identity": ident, "template": tmpl, "p": p, "path": v.path})
        count += len(chunk)
        if on_progress:
            on_progress(count, len(asks))
    v1 = [done[key(i, 0)] for i in range(n)]
    v2 = v1 if judge.symmetric else [done[key(i, 1)] for i in range(n)]
    first = [v.p for v in v1]
    second = first if judge.symmetric else [1.0 - v.p for v in v2]
    return OrderedVerdicts(first, second, [v.path for v in v1], [v.path for v in v2])


def judge_both_orders(judge, prompts: Sequence[Prompt], a: Sequence[str], b: Sequence[str], *,
                      cache: VerdictCache | None = None, judge_id: str | None = None,
                      on_progress: Callable[[int, int], None] | None = None) -> tuple[list[float], list[float]]:
    """``judge_orders`` without the paths: the two (N,) lists of P(``a[i]`` better), ``a`` shown first / second."""
    r = judge_orders(judge, prompts, a, b, cache=cache, judge_id=judge_id, on_progress=on_progress)
    return r.first, r.second
