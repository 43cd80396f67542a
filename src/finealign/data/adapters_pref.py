"""Adapters that give preference pairs: HH-RLHF, AlpacaEval 2 annotations, QA-Feedback's pairwise labels."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ..errors import DataError
from .adapters_common import Loaded, Row, need_file, qa_prompt, rows
from .records import Message, PairRecord

# ---------------------------------------------------------------------------------------------- HH-RLHF

_TURN = re.compile(r"\n\n(Human|Assistant):")
_ASSISTANT = "\n\nAssistant:"
_ROLE = {"Human": "user", "Assistant": "assistant"}


def transcript_messages(text: str) -> list[Message]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[{"role": "user", ...}, {"role": "assistant", ...}]``.

    Contents are stripped; consecutive turns of the same speaker (a few HH transcripts have two
    ``Assistant:`` turns in a row) are merged with a blank line, so roles alternate as most chat
    templates require; turns with no text are dropped. Raises ``ValueError`` when there is text
    before the first turn marker.
    """
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError("text before the first 'Human:' turn")
    msgs: list[Message] = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role, content = _ROLE[speaker], content.strip()
        if not content:
            continue
        if msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"] += "\n\n" + content
        else:
            msgs.append({"role": role, "content": content})
    return msgs


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two transcripts into (shared prefix, chosen reply, rejected reply).

    The prefix runs up to the last ``\\n\\nAssistant:`` marker that both transcripts share
    character for character; the replies are what follows it (stripped). In 5 of the 2,312
    harmless-base test pairs the transcripts differ before their final turn; the same rule still
    gives one shared prompt, and the replies then hold more than one turn.
    """
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    cut = chosen.rfind(_ASSISTANT, 0, n)
    if cut < 0:
        raise ValueError("the transcripts share no prefix ending in an 'Assistant:' turn")
    k = cut + len(_ASSISTANT)
    return chosen[:cut], chosen[k:].strip(), rejected[k:].strip()


def load_hh(path: Path, name: str = "hh-harmless", subset: str = "harmless-base") -> Loaded:
    path = need_file(path, "test.jsonl")
    out, skipped = [], Counter()
    for row in rows(path):
        ch, rj = row.text("chosen"), row.text("rejected")
        try:
            prefix, c, r = split_hh_pair(ch, rj)
            prompt = transcript_messages(prefix)
        except ValueError as e:
            raise row.error("chosen", str(e)) from None
        if not prompt:
            raise row.error("chosen", "no Human turn before the final Assistant turn")
        if not c or not r:
            skipped[f"empty {'chosen' if not c else 'rejected'} reply"] += 1
            continue
        multi = any(m in x for x in (c, r) for m in ("\n\nHuman:", "\n\nAssistant:"))
        out.append(PairRecord(prompt=prompt, chosen=c, rejected=r, id=str(row.line), subset=subset,
                              meta={"line": row.line, **({"multi_turn_reply": True} if multi else {})}))
    return Loaded(out, skipped)


# --------------------------------------------------------------------------------------- AlpacaEval 2

ALPACA_REFERENCE = "gpt4_1106_preview"


def alpaca_files(path: Path, sub: str) -> list[Path]:
    """A single ``.json`` file, or every ``*.json`` in a folder (or in its ``sub`` folder)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir() and (path / sub).is_dir():
        path = path / sub
    files = sorted(path.glob("*.json")) if path.is_dir() else []
    if not files:
        raise DataError(path, None, None, f"no {sub} .json files found")
    return files


def alpaca_pair(row: Row) -> PairRecord | str:
    """One AlpacaEval judgment as a soft-labelled pair, or the reason to leave it out."""
    instruction = row.text("instruction")
    o1, o2 = row.text("output_1", allow_empty=True), row.text("output_2", allow_empty=True)
    g1, g2 = row.text("generator_1"), row.text("generator_2")
    if row.get("preference") is None:
        return "no preference"
    pref = row.number("preference")
    if not 1.0 <= pref <= 2.0:
        raise row.error("preference", f"expected a number in [1, 2], got {pref}")
    if not o1.strip() or not o2.strip():
        return "empty output"
    p2 = pref - 1.0  # P(output_2 preferred)
    second = p2 > 0.5  # an exact tie keeps the original order
    evaluated = g1 if g2 == ALPACA_REFERENCE else g2
    meta = {"generator_1": g1, "generator_2": g2, "preference": pref, "index": row.line - 1}
    if row.get("dataset") is not None:
        meta["dataset"] = row.text("dataset", allow_empty=True)
    return PairRecord(prompt=instruction, chosen=o2 if second else o1, rejected=o1 if second else o2,
                      id=f"{evaluated}:{row.line - 1}", subset=evaluated, p_chosen=max(p2, 1.0 - p2), meta=meta)


def load_alpaca_eval(path: Path) -> Loaded:
    out, skipped = [], Counter()
    for f in alpaca_files(path, "annotations"):
        for row in rows(f):
            r = alpaca_pair(row)
            if isinstance(r, str):
                skipped[r] += 1
            else:
                out.append(r)
    return Loaded(out, skipped)


# ------------------------------------------------------------------------------------------ QA-Feedback

QA_PAIRS = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


def load_qa_pairs(path: Path) -> Loaded:
    """The 6 pairwise labels per question (1 = first preferred, 2 = second, 0 = none: left out)."""
    path = need_file(path, "dev_feedback.json")
    out, skipped = [], Counter()
    for row in rows(path):
        prompt = qa_prompt(row.text("question"), row.items("passages"), row)
        labels = row.items("preference", n=len(QA_PAIRS))
        for (a, b), lab in zip(QA_PAIRS, labels):
            if lab not in (0, 1, 2) or isinstance(lab, bool):
                raise row.error("preference", f"expected labels 0, 1 or 2, got {lab!r}")
            if lab == 0:
                skipped["no preference (label 0)"] += 1
                continue
            ta, tb = row.text(f"prediction {a}"), row.text(f"prediction {b}")
            win, lose = (ta, tb) if lab == 1 else (tb, ta)
            out.append(PairRecord(prompt=prompt, chosen=win, rejected=lose, id=f"{row.line}:{a}v{b}",
                                  meta={"question_index": row.line - 1, "pair": [a, b],
                                        "chosen_prediction": a if lab == 1 else b}))
    return Loaded(out, skipped)
