"""Preference labeling: from k scored responses per prompt to DPO pairs or KTO labels (TRL formats).

* DPO: per prompt, the best vs the worst response, kept when ``best - worst > margin``; a group
  whose best and worst score the same is a *tie*, dropped and counted; a group with a smaller gap
  than ``margin`` is dropped as *below margin*.
* KTO: per prompt, responses ranked by score; the top ``top_frac`` are desirable (``label`` true),
  the bottom ``1 - top_frac`` undesirable; with an odd count the middle one is left out; a response
  scored equal to one on the other side is a tie and left out (both). The same margin applies to the
  group's spread.

Empty responses are scored as they are (a model that said nothing is usually the worse one) and
counted (``LabelStats.empty``); a DPO group whose best and worst responses are the same text is
dropped as ``identical responses``.

Output records are TRL's: ``prompt/chosen/rejected`` and ``prompt/completion/label``; with
``conversational`` (the default) prompts are chat messages and completions assistant messages, so
TRL applies the model's chat template as ``finealign generate`` did when sampling. The standard
format writes plain strings (one format per file: a prompt of several messages is then an error).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from ..config import Settings, positive, setting
from ..core.align import same_text
from ..data.chat import trl_completion, trl_prompt
from ..data.records import Prompt, ResponseRecord
from ..errors import DataError, FinealignError

FORMATS = ("dpo", "kto")


def _margin(v) -> str | None:
    return None if math.isfinite(v) and v >= 0 else f"must be a finite number >= 0, got {v}"


def _open_unit(v) -> str | None:
    return None if 0.0 < v < 1.0 else f"must be in (0, 1), got {v}"


@dataclass(kw_only=True)
class LabelConfig(Settings):
    """How scored responses become DPO pairs or KTO labels (``label_records``, ``label_file``; the
    fields are flags of ``finealign label``)."""

    format: str = setting("dpo", choices=FORMATS, short="-f", help="dpo | kto.")
    margin: float = setting(0.0, check=_margin, help="Keep a prompt only when best - worst > MARGIN (0: drop only "
                                                     "ties).")
    top_frac: float = setting(0.5, check=_open_unit, help="KTO: share of each prompt's responses labeled desirable.")
    conversational: bool = setting(True, deprecated_off=("--standard",),
                                   help="Write chat messages (TRL conversational format); --no-conversational: "
                                        "plain strings (standard format).")
    max_chars: int | None = setting(None, check=positive, help="Cut responses to N characters before scoring (the "
                                                               "written text is the full response).")
    batch_size: int = setting(8, identity=False, check=positive, help="Responses per scorer call.")


class PairChoice(NamedTuple):
    """``best``/``worst``: indices into the group's scores; ``reason``: '' when kept, else why dropped."""

    best: int
    worst: int
    margin: float
    reason: str


def choose_pair(scores: Sequence[float], margin: float = 0.0) -> PairChoice:
    """Best vs worst of one prompt's scores (K,); first index wins among equal scores."""
    if len(scores) < 2:
        return PairChoice(0, 0, 0.0, "fewer than 2 responses")
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    gap = float(scores[best] - scores[worst])
    if gap == 0.0:
        return PairChoice(best, worst, gap, "tie")
    if gap <= margin:
        return PairChoice(best, worst, gap, "below margin")
    return PairChoice(best, worst, gap, "")


def kto_labels(scores: Sequence[float], top_frac: float = 0.5, margin: float = 0.0) -> tuple[list[bool | None], str]:
    """Per response of one prompt (K,): True desirable, False undesirable, None left out; and why a
    whole group is left out ('' when not).

    Ranking by score (descending, stable): the first ``floor(K * top_frac)`` are desirable, the last
    ``floor(K * (1 - top_frac))`` undesirable (so K = 3, top_frac 0.5 leaves the middle out).
    """
    k = len(scores)
    if k < 2:
        return [None] * k, "fewer than 2 responses"
    spread = max(scores) - min(scores)
    if spread == 0.0:
        return [None] * k, "tie"
    if spread <= margin:
        return [None] * k, "below margin"
    order = sorted(range(k), key=lambda i: -scores[i])
    n_pos, n_neg = int(math.floor(k * top_frac)), int(math.floor(k * (1 - top_frac)))
    n_pos, n_neg = max(n_pos, 1), max(n_neg, 1)
    labels: list[bool | None] = [None] * k
    for i in order[:n_pos]:
        labels[i] = True
    for i in order[k - n_neg:]:
        labels[i] = False
    pos = {scores[i] for i in range(k) if labels[i] is True}
    neg = {scores[i] for i in range(k) if labels[i] is False}
    tied = pos & neg
    for i in range(k):
        if labels[i] is not None and scores[i] in tied:
            labels[i] = None
    return labels, ""


@dataclass
class LabelStats:
    prompts: int = 0
    responses: int = 0
    written: int = 0
    dropped: Counter = field(default_factory=Counter)  # groups (dpo) / responses (kto) left out, by reason
    empty: int = 0  # empty responses among ``responses`` (scored as they are)


def group_responses(records: Sequence[ResponseRecord]) -> list[list[ResponseRecord]]:
    """Responses grouped by ``prompt_id`` (or by the prompt itself when there is none), in first-seen order."""
    groups: dict[str, list[ResponseRecord]] = defaultdict(list)
    import json

    for r in records:
        key = r.prompt_id if r.prompt_id is not None else "prompt:" + json.dumps(r.prompt, ensure_ascii=False)
        groups[key].append(r)
    return list(groups.values())


def _prompt_out(prompt: Prompt, conversational: bool):
    return trl_prompt(prompt, conversational=conversational, where="label")  # data.chat: one format per file


def _completion_out(text: str, conversational: bool):
    return trl_completion(text, conversational=conversational)


def label_records(records: Sequence[ResponseRecord], score: Callable[[list[ResponseRecord]], list[float]],
                  cfg: LabelConfig, scorer_name: str = "") -> tuple[list[dict], LabelStats]:
    """TRL records and counts. ``score(responses)`` gives one score per ``ResponseRecord``."""
    st = LabelStats()
    keep = list(records)  # an empty response is scored as it is (a model that said nothing), and counted
    st.empty = sum(not r.completion.strip() for r in keep)
    groups = group_responses(keep)
    st.prompts, st.responses = len(groups), len(keep)
    flat_scores = score(keep) if keep else []
    by_id = {id(r): s for r, s in zip(keep, flat_scores)}
    out: list[dict] = []
    for g in groups:
        sc = [by_id[id(r)] for r in g]
        pid = g[0].prompt_id
        conv = cfg.conversational
        if cfg.format == "dpo":
            ch = choose_pair(sc, cfg.margin)
            if not ch.reason and same_text(g[ch.best].completion, g[ch.worst].completion):
                ch = ch._replace(reason="identical responses")  # a tie in text, whatever the scores
            if ch.reason:
                st.dropped[ch.reason] += 1
                continue
            out.append({"prompt": _prompt_out(g[0].prompt, conv), "chosen": _completion_out(g[ch.best].completion, conv),
                        "rejected": _completion_out(g[ch.worst].completion, conv), "id": pid,
                        "meta": {"scorer": scorer_name, "chosen_score": sc[ch.best], "rejected_score": sc[ch.worst],
                                 "margin": ch.margin, "chosen_sample": g[ch.best].sample,
                                 "rejected_sample": g[ch.worst].sample, "k": len(g)}})
        else:
            labels, reason = kto_labels(sc, cfg.top_frac, cfg.margin)
            if reason:
                st.dropped[reason] += len(g)
                continue
            for r, s, lab in zip(g, sc, labels):
                if lab is None:
                    st.dropped["middle or tied"] += 1
                    continue
                out.append({"prompt": _prompt_out(r.prompt, conv), "completion": _completion_out(r.completion, conv),
                            "label": lab, "id": f"{pid}:{r.sample}" if pid is not None else None,
                            "meta": {"scorer": scorer_name, "score": s, "sample": r.sample}})
    for o in out:
        if o.get("id") is None:
            o.pop("id", None)
    st.written = len(out)
    return out, st


def label_file(scorer_spec: str, src: str | Path, dst: str | Path, cfg: LabelConfig, *, scorer=None,
               on_total=None, on_progress=None, overwrite: bool = False, cache: str | Path | None = None) -> LabelStats:
    """Read a ``generate`` output file, score every response (cached in ``cache``, default
    ``DST.scores.jsonl``, so a rerun, e.g. with another margin, does not rescore), write DPO pairs / KTO
    labels to ``dst`` atomically.

    The cache is tied to the scorer's fingerprint (``data.manifest``): a changed model behind the
    same spec refuses to reuse it; ``overwrite`` empties it first. Several labelings of the same
    responses with the same scorer may share one ``cache`` (``rewards.cache.shared_cache_path``): the
    scorer is loaded only when some response is not cached yet. Raises ``DataError`` for a bad input
    and ``FinealignError`` for a bad scorer spec (checked before anything is written)."""
    from ..data.io import read_records, write_jsonl
    from ..rewards.cache import LazyScorer, cached_count, score_units, unit
    from ..rewards import load_scorer

    src, dst = Path(src), Path(dst)
    records = read_records(src)
    if not records:
        raise DataError(src, None, None, "no records")
    if not isinstance(records[0], ResponseRecord):
        raise DataError(src, 1, None, f"expected responses (prompt/completion, as written by `finealign generate`), "
                                      f"got {records[0].kind} records")
    if src.resolve() == dst.resolve():
        raise FinealignError(f"{dst}: the output must differ from the input")
    cache = Path(cache) if cache is not None else dst.with_name(dst.name + ".scores.jsonl")
    from ..data.manifest import prepare_output
    from ..rewards.base import check_spec, scorer_fingerprint

    if scorer is None:
        check_spec(scorer_spec)  # a bad spec fails here, before any output, even when every score is cached
    prepare_output(cache, "score-cache", {scorer_spec: scorer_fingerprint(scorer_spec)}, merge=True,
                   overwrite=overwrite)  # checked before the scorer is loaded
    scorer_obj = scorer if scorer is not None else LazyScorer(lambda: load_scorer(scorer_spec))

    def score(rs: list[ResponseRecord]) -> list[float]:
        units = [unit(r.prompt, r.completion, cfg.max_chars) for r in rs]
        if on_total:  # what is left to score (a shared cache may hold every one)
            keys = {u.key for u in units}
            on_total(len(keys) - cached_count(cache, scorer_spec, keys))
        got = score_units(scorer_obj, scorer_spec, units, cache, batch_size=cfg.batch_size, on_progress=on_progress)
        return [got[u.key] for u in units]

    rows, st = label_records(records, score, cfg, scorer_spec)
    write_jsonl(dst, rows)
    return st
