"""A pairwise judge's reply -> a verdict: which answer won, where the answer letter is, and which path gave it.

Two pure pieces, used by the endpoint judge (``judges.OpenAIJudge``) and testable on their own:

* ``parse_verdict(text)``: one parser for the common answer formats: a bare letter (``B``, `` b.``),
  ``(B)``, ``**B**``, ``[[B]]`` (MT-Bench; ``[[C]]`` is its tie), ``Answer: B``, ``Answer - A``,
  ``Output (b)``, ``Response B``, ``A is better``, a JSON object (``{"answer": "B"}``, any of the keys in
  ``JSON_KEYS``), reasoning followed by a final answer (``... Final answer: B``: the last explicit verdict
  wins), and a letter in a reply in another language when it is the only A/B letter there, beside a word
  for "better" and without a negation (``La respuesta B es mejor.``). "Both A and B", "neither", "tie",
  "equally good" and refusals (``I'm sorry, I can't ...``) are explicit ties when no letter is preferred.
  Only explicit verdicts count: negated or descriptive mentions (``B is not better``, ``Not A``,
  ``B has an error.``, ``A: 3/10, B: 8/10``) and a reply cut at ``max_tokens`` before its verdict
  (``... Answer A``) are unparsable (``verdict`` None).
* ``letter_probability(content, text, span)``: ``P(A) / (P(A) + P(B))`` from the top log-probabilities at
  the token that holds the answer letter (the token covering ``span``), not at the reply's first token
  (which is ``**`` or ``Answer`` for many chat models). Only the token of an explicit verdict is read: where the
  tokens cannot be lined up with the text, or the reply has no explicit verdict, there is no probability
  (never the first bare ``A`` / ``B`` token, which may be a mention: ``Answer A is concise but ...``).

A verdict's *path* says how it was read: ``logprob`` (the letter token's log-probabilities), ``parsed``
(the parsed letter: 1 or 0), ``tie`` (an explicit tie or refusal: 1/2), ``score`` (a scorer judge: the
higher score wins). Every verdict records its path and the win-rate results count them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple, Sequence

from ..errors import FinealignError


class JudgeError(FinealignError):
    """A judge that failed (an endpoint that keeps failing or answering garbage, a bad spec)."""

__all__ = ["JSON_KEYS", "PATHS", "PATH_LOGPROB", "PATH_PARSED", "PATH_SCORE", "PATH_TIE", "Parsed", "Verdict",
           "letter_probability", "parse_answer", "parse_verdict"]

PATH_LOGPROB, PATH_PARSED, PATH_TIE, PATH_SCORE = "logprob", "parsed", "tie", "score"
PATHS = (PATH_LOGPROB, PATH_PARSED, PATH_TIE, PATH_SCORE)
JSON_KEYS = ("final_answer", "answer", "verdict", "winner", "better", "better_answer", "best", "preferred",
             "preference", "choice", "decision", "result", "output", "response")


class Verdict(NamedTuple):
    """One ordered comparison: ``p`` = P(the text shown first is better), and the ``path`` that gave it."""

    p: float
    path: str


class Parsed(NamedTuple):
    """``verdict``: ``"A"``, ``"B"``, ``"tie"`` or None (unparsable); ``span``: [start, end) of the answer letter
    in the text (None for ties and failures); ``why``: the format recognised, or why nothing was."""

    verdict: str | None
    span: tuple[int, int] | None
    why: str


_OPEN, _CLOSE = r"[\(\[\{\"'`*_\s]*", r"[\)\]\}\"'`*_]*"
_LABEL = r"(?:(?:the\s+)?(?:answer|output|response|option|assistant|reply)\s*)"
# an answer letter, optionally labelled and bracketed: "B", "(b)", "**B**", "Answer B", "Output (b)"
_LETTER = _OPEN + _LABEL + r"?" + _OPEN + r"(?P<L>[AaBb])" + _CLOSE + r"(?![A-Za-z0-9])"
_SEP = r"\s*(?:is|would\s+be|:|-|\u2013|\u2014|=)\s*"
_MTBENCH = re.compile(r"\[\[(?P<L>[ABCabc])\]\]")
_MARKERS = [re.compile(x, re.I) for x in (
    r"(?:final\s+|my\s+|the\s+)?(?:answer|verdict|choice|decision|winner|judg(?:e)?ment|preference|selection|"
    r"conclusion|output|response)" + _SEP + r"(?:answer\s+|response\s+|output\s+)?" + _LETTER,
    r"(?:better|best|preferred|superior|stronger)\s+(?:answer|response|output|one|choice|reply)?" + _SEP + _LETTER,
    r"\bi\s+(?:would\s+)?(?:choose|pick|prefer|select|go\s+with)\s+" + _LETTER,
    r"\bi\s+(?:think|believe|say|vote\s+for)\s+" + _LETTER + r"(?=[.!]?\s*$)")]
# "A is better", "Answer (B) is more helpful": the letter first (upper case only: "a is" is prose)
_LETTER_FIRST = re.compile(
    r"(?<![A-Za-z0-9])(?:(?:answer|output|response)\s*)?[\(\[*]*(?P<L>[AB])[\)\]*]*\s+(?:is|was|seems|appears)\s+"
    r"(?:(?:clearly|slightly|much|far|the|overall)\s+)*(?:better|best|preferred|superior|stronger|the\s+winner|"
    r"more\s+(?:helpful|accurate|correct|complete|relevant))\b")
_TIE_VALUE = re.compile(r"^\W*(?:a\s+)?(tie|both|neither|equal|equally\s+good|same|none|c)\W*$", re.I)
_MARKER_TIE = re.compile(r"(?:answer|verdict|choice|decision|winner|judg(?:e)?ment|preference|result)" + _SEP
                         + r"[\(\[\{\"'`*_\s]*(?:a\s+)?(tie|both|neither|equal|none)\b", re.I)
_BOTH_LETTERS = re.compile(r"\b(?:neither\s+(?:answer\s+)?\(?A\)?\s+nor\s+(?:answer\s+)?\(?B\)?|both\s+(?:answers?\s+)?"
                           r"\(?A\)?\s+and\s+(?:answer\s+)?\(?B\)?)", re.I)
_LEADING = re.compile(r"^\W*" + _LABEL + r"?[:\-\u2013\u2014=]?" + _OPEN + r"(?P<L>[AaBb])" + _CLOSE
                      + r"(?:[.!]?\s*$|\s*[.,!\n\-\u2013\u2014)])", re.I)
# tie words: "both" only with a judgement of the two together ("both are good"), never "both answers address ..."
_TIE_WORDS = re.compile(r"\b(tie|neither|equally|equal\s+quality|same\s+quality|no\s+preference|"
                        r"both\s+(?:answers\s+|responses\s+|outputs\s+)?(?:are\s+)?(?:equally|good|bad|fine|correct|"
                        r"incorrect|wrong|acceptable|similar|the\s+same)|"
                        r"(?:cannot|can't|unable\s+to)\s+(?:decide|choose|determine|pick))\b", re.I)
_REFUSAL = re.compile(r"(?:\bi'm\s+sorry|\bi\s+am\s+sorry|\bi\s+(?:cannot|can't|can\s+not|won't|will\s+not)\b|"
                      r"\bas\s+an\s+ai\b|\bnot\s+able\s+to\s+(?:help|assist|judge|compare))", re.I)
# a lone letter counts only beside a word for "better" / "the answer is" in another language, without a negation
# ("La respuesta B es mejor.", "答案是 B"); English prose around a lone letter ("B has an error.", "Not A", a reply
# cut after "Answer A") is no verdict
_FOREIGN_BETTER = re.compile(r"(?:\b(?:mejor|melhor|meilleure?|besser|migliore|beter|lepsz[aey]|лучше)\b|"
                             r"更好|更佳|较好|答案|回答是|より良い|良い|더\s*좋)", re.I)
_NEGATION = re.compile(r"(?:\b(?:not|no|nicht|kein\w*|não|nao|pas|non|nie|никак|не)\b|n't\b|不|没)", re.I)
_LONE = re.compile(r"(?<![A-Za-z0-9])([AB])(?![A-Za-z0-9])")
# "B is worse", "Answer A is inferior": the other letter wins ("A is wrong" describes, it does not compare) (no letter token to read: parsed path)
_LETTER_WORSE = re.compile(
    r"(?<![A-Za-z0-9])(?:(?:answer|output|response)\s*)?[\(\[*]*(?P<L>[AB])[\)\]*]*\s+(?:is|was)\s+"
    r"(?:(?:clearly|slightly|much|far|the|overall)\s+)*(?:worse|worst|inferior|less\s+helpful)\b")


def _lower_ok(text: str, m: re.Match) -> bool:
    """A lower-case letter counts only when bracketed/quoted or followed by the end or punctuation ("a good" is prose)."""
    s, e = m.span("L")
    if text[s].isupper():
        return True
    before = text[s - 1] if s > 0 else ""
    after = text[e:].lstrip("*_`'\")]} ")
    return before in "([{\"'`*" or not after or after[0] in ".,;:!?\n"


def _json_verdict(text: str) -> Parsed | None:
    """A verdict from the first JSON object in the reply that has one of ``JSON_KEYS`` with a string value."""
    start = text.find("{")
    while start != -1:
        end = text.rfind("}")
        while end > start:
            try:
                obj = json.loads(text[start:end + 1])
            except ValueError:
                end = text.rfind("}", start, end)
                continue
            if isinstance(obj, dict):
                low = {str(k).lower(): (k, v) for k, v in obj.items()}
                for key in JSON_KEYS:
                    if key in low and isinstance(low[key][1], str):
                        raw_key, value = low[key]
                        sub = _short(value)
                        if sub is None:
                            continue
                        m = re.search(re.escape(json.dumps(raw_key)) + r"\s*:\s*\"", text[start:end + 1])
                        off = start + m.end() if m else None
                        span = None if sub.span is None or off is None else (off + sub.span[0], off + sub.span[1])
                        return Parsed(sub.verdict, span, f"JSON {raw_key!r}")
            break
        start = text.find("{", start + 1)
    return None


def _short(value: str) -> Parsed | None:
    """A short answer value ("B", "Answer A", "(b)", "tie", "both")."""
    if _TIE_VALUE.match(value):
        return Parsed("tie", None, "tie value")
    m = _LEADING.match(value)
    if m and _lower_ok(value, m):
        return Parsed(m.group("L").upper(), m.span("L"), "letter")
    return None


def parse_verdict(text: str | None, *, truncated: bool = False) -> Parsed:
    """The verdict of a pairwise judge's reply (see the module docstring for the formats).

    Only explicit verdicts count. Order: a JSON object; the last explicit verdict (``[[B]]``, ``Answer: B``,
    ``Final answer - A``, ``the better response is (B)``, ``I choose A``); the last "X is better" / "X is
    worse" (a letter inside "both A and B" / "neither A nor B" does not count: "Both A and B have flaws, but B
    is slightly better" is B); "both A and B" / "neither A nor B" (a tie); a reply that is the letter
    (``B``, ``(b)``, ``**B**``, ``Output (b)``, ``B. Because ...``); tie words and refusals when no answer
    letter is named outside them ("Both answers address the question. However, Answer B" is no tie); a lone
    A/B letter beside a word for "better" in another language without a negation. Negated or descriptive
    mentions ("B is not better", "Not A", "B has an error.", "A is concise but B is detailed.") are unparsable.

    ``truncated``: the reply was cut at ``max_tokens``; then only a JSON verdict, an explicit verdict or a reply
    that opens with the letter count (a cut "A is better than B on style, but" is no verdict).
    """
    if text is None or not text.strip():
        return Parsed(None, None, "empty reply")
    found = _json_verdict(text) if "{" in text else None
    if found is not None:
        return found
    marks = [m for rx in _MARKERS for m in rx.finditer(text) if _lower_ok(text, m)]
    marks += list(_MTBENCH.finditer(text))
    tie_mark = list(_MARKER_TIE.finditer(text))
    if marks or tie_mark:
        last = max(marks + tie_mark, key=lambda m: (m.end(), m.start()))
        if last.re is _MARKER_TIE or last.group("L").upper() == "C":
            return Parsed("tie", None, "explicit tie")
        return Parsed(last.group("L").upper(), last.span("L"), "explicit verdict")
    m = _LEADING.match(text)
    leading = m if m and _lower_ok(text, m) else None
    if truncated:
        if leading is not None:
            return Parsed(leading.group("L").upper(), leading.span("L"), "letter")
        return Parsed(None, None, "no explicit final verdict before the cut")
    pairs = [x.span() for x in _BOTH_LETTERS.finditer(text)]
    inside = lambda i: any(s <= i < e for s, e in pairs)  # noqa: E731
    weak = [w for rx in (_LETTER_FIRST, _LETTER_WORSE) for w in rx.finditer(text) if not inside(w.start("L"))]
    if weak:
        w = max(weak, key=lambda m: m.start())
        if w.re is _LETTER_WORSE:
            return Parsed("B" if w.group("L") == "A" else "A", None, "'X is worse'")
        return Parsed(w.group("L"), w.span("L"), "'X is better'")
    lone = [x for x in _LONE.finditer(text) if not (x.group(1) == "A" and _is_article(text, x.start()))]
    if pairs:  # a tie unless a letter is named outside "both A and B" ("..., but A is closer": no verdict)
        if any(not inside(x.start()) for x in lone):
            return Parsed(None, None, "'both A and B' beside a lone letter: no explicit verdict")
        return Parsed("tie", None, "both / neither")
    if leading is not None:
        return Parsed(leading.group("L").upper(), leading.span("L"), "letter")
    if not lone:
        if _TIE_WORDS.search(text):
            return Parsed("tie", None, f"tie ({_TIE_WORDS.search(text).group(1).lower()})")
        if _REFUSAL.search(text):
            return Parsed("tie", None, "refusal")
    elif len({x.group(1) for x in lone}) == 1 and len(lone) <= 2 and _FOREIGN_BETTER.search(text) \
            and not _NEGATION.search(text):
        return Parsed(lone[-1].group(1), lone[-1].span(1), "single letter")
    return Parsed(None, None, "no explicit A/B verdict found")


def _is_article(text: str, i: int) -> bool:
    """``text[i] == "A"`` opens a sentence and a lower-case word follows: the English (or Portuguese) article."""
    before = text[:i].rstrip(" *_\"'`([")
    return (not before or before[-1] in ".!?:\n") and re.match(r"A\s+[a-z\u00e0-\u00ff]", text[i:]) is not None


def parse_answer(text: str | None) -> float | None:
    """1.0 for a reply whose verdict is A, 0.0 for B, 0.5 for an explicit tie, None when unparsable."""
    v = parse_verdict(text).verdict
    return None if v is None else {"A": 1.0, "B": 0.0, "tie": 0.5}[v]


# ----------------------------------------------------------------------------------- log-probabilities


def _get(obj: Any, name: str, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _norm(token: str | None) -> str:
    return (token or "").strip().strip("*_()[]{}\"'`.:,;!").upper()


def _token_index(content: Sequence[Any], text: str, span: tuple[int, int]) -> int | None:
    """The index of the token holding the answer letter: the token covering ``span`` when the tokens spell the
    text and that token is the letter (``B``, `` B``, ``**B``, ``(b``); else None (the text decides). No
    fallback to the first bare A / B token: in ``Let me compare ... Answer A, because`` that token is no verdict."""
    toks = [_get(t, "token") or "" for t in content]
    joined = "".join(toks)
    base = joined.find(text)
    if base < 0 and text.strip():  # a server that stripped the reply's outer whitespace, or the tokens'
        k = joined.find(text.strip())
        base = k - (len(text) - len(text.lstrip())) if k >= 0 else -1
    if base < 0 and joined.find(text.strip()) < 0:
        return None
    pos, at = 0, span[0] + base
    for i, t in enumerate(toks):
        if pos <= at < pos + len(t):
            return i if _norm(t) == text[span[0]].upper() else None
        pos += len(t)
    return None


def letter_probability(content: Sequence[Any] | None, text: str, span: tuple[int, int] | None) -> float | None:
    """``P(A) / (P(A) + P(B))`` at the answer-letter token of a reply, from its top log-probabilities.

    ``content``: the ``logprobs.content`` list of an OpenAI chat completion (objects or dicts with
    ``token``, ``logprob``, ``top_logprobs``); ``text``: the reply; ``span``: the letter's [start, end) from
    ``parse_verdict`` (None: no letter token to read, returns None). Where the tokens do not spell the
    text, or the token there is not the letter, None (the parsed text decides). Alternatives are pooled by their letter
    (``A``, `` A``, ``**A``, ``(a`` all count as A). None when no token holds a letter or the alternatives
    carry no A / B mass.
    """
    if not content or span is None:
        return None
    i = _token_index(content, text, span)
    if i is None:
        return None
    tok = content[i]
    tops = list(_get(tok, "top_logprobs") or [])
    if not any(_get(t, "token") == _get(tok, "token") for t in tops):
        tops.append(tok)  # the sampled token itself, when the server left it out of its top list
    mass = {"A": 0.0, "B": 0.0}
    for t in tops:
        key, lp = _norm(_get(t, "token")), _get(t, "logprob")
        if key in mass and lp is not None and math.isfinite(float(lp)):
            mass[key] += math.exp(float(lp))
    if mass["A"] + mass["B"] <= 0:
        return None
    return mass["A"] / (mass["A"] + mass["B"])
