"""Adapters for evaluation sets: Prometheus ratings, MT-Bench prompts, AlpacaEval outputs and leaderboard."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

from ..errors import DataError
from .adapters_common import Loaded, Row, need_file, rows
from .adapters_pref import ALPACA_REFERENCE, alpaca_files
from .io import _decode
from .records import Message, PromptRecord, RatingRecord, ResponseRecord

# ------------------------------------------------------------------------------------------- Prometheus

_SECTIONS = re.compile(
    r"###The instruction to evaluate:\n(?P<instruction>.*?)\n\n###Response to evaluate:\n(?P<response>.*?)"
    r"\n\n###Reference Answer \(Score 5\):\n(?P<reference>.*?)\n\n###Score Rubrics:\n(?P<rubric>.*?)"
    r"\n\n###Feedback:\s*$", re.S)
_DIALOGUE = re.compile(
    r"^Here is a previous dialogue between an assistant and an user\. Generate a human preferable response by the "
    r"assistant\.\nUser: (?P<u1>.*)\n\nAssistant:(?P<a1>.*)\n\nUser: (?P<u2>.*)\n\nAssistant:\s*$", re.S)


def prometheus_parts(text: str) -> dict[str, str] | None:
    """Cut the question, response, reference answer and rubric out of Prometheus' grading prompt."""
    m = _SECTIONS.search(text)
    return None if m is None else {k: v.strip() for k, v in m.groupdict().items()}


def dialogue_messages(instruction: str) -> list[Message] | str:
    """Prometheus' MT-Bench turn-2 items embed the first exchange as ``User: .. Assistant: .. User: ..``."""
    m = _DIALOGUE.match(instruction)
    if m is None:
        return instruction
    return [{"role": "user", "content": m["u1"].strip()}, {"role": "assistant", "content": m["a1"].strip()},
            {"role": "user", "content": m["u2"].strip()}]


def load_prometheus(path: Path, file: str) -> Loaded:
    """``prompt`` (chat messages for the multi-turn MT-Bench items), ``response``, ``score`` = mean GPT-4 score."""
    path = need_file(path, file)
    out = []
    for row in rows(path):
        parts = prometheus_parts(row.text("instruction"))
        if parts is None:
            raise row.error("instruction", "not a Prometheus absolute-grading prompt (sections ###The instruction "
                                           "to evaluate / ###Response to evaluate / ... / ###Feedback not found)")
        if not parts["instruction"] or not parts["response"]:
            raise row.error("instruction", f"empty {'question' if not parts['instruction'] else 'response'} "
                                           "in the grading prompt")
        scores = row.items("gpt4_score")
        if not scores:
            raise row.error("gpt4_score", "empty list")
        vals = []
        for i, s in enumerate(scores):
            try:
                v = float(s)
            except (TypeError, ValueError):
                raise row.error(f"gpt4_score[{i}]", f"expected a score 1-5, got {s!r}") from None
            if not 1.0 <= v <= 5.0:
                raise row.error(f"gpt4_score[{i}]", f"expected a score 1-5, got {s!r}")
            vals.append(v)
        source = row.get("response_source")
        idx = row.get("idx", row.line)
        out.append(RatingRecord(
            prompt=dialogue_messages(parts["instruction"]), response=parts["response"], score=sum(vals) / len(vals),
            id=f"{idx}:{source}", subset=source if isinstance(source, str) else None,
            meta={"idx": idx, "category": row.get("category"), "gpt4_scores": vals, "rubric": parts["rubric"],
                  "reference_answer": parts["reference"]}))
    return Loaded(out, Counter())


# --------------------------------------------------------------------------------------------- MT-Bench


def _questions(path: Path) -> list[tuple[Row, int, list[str]]]:
    out = []
    for row in rows(path):
        qid = row.get("question_id")
        if isinstance(qid, bool) or not isinstance(qid, int):
            raise row.error("question_id", "missing" if qid is None else f"expected an integer, got {qid!r}")
        turns = row.items("turns")
        if len(turns) < 1:
            raise row.error("turns", "empty list")
        for i in range(len(turns)):
            if not isinstance(turns[i], str) or not turns[i].strip():
                raise row.error(f"turns[{i}]", "empty" if isinstance(turns[i], str) else
                                f"expected a string, got {type(turns[i]).__name__}")
        out.append((row, qid, turns))
    return out


def load_mt_bench(path: Path) -> Loaded:
    """The 80 first-turn prompts, ``id`` = ``question_id``."""
    path = need_file(path, "question.jsonl")
    recs = [PromptRecord(prompt=turns[0], id=str(qid), meta={"category": row.get("category"), "turn": 1})
            for row, qid, turns in _questions(path)]
    return Loaded(recs, Counter())


def _gpt4_first_answers(path: Path) -> dict[int, str]:
    out = {}
    for row in rows(path):
        qid = row.get("question_id")
        choices = row.items("choices")
        if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("turns"), list):
            raise row.error("choices", "expected [{index, turns: [...]}]")
        t = choices[0]["turns"]
        if isinstance(qid, int) and t and isinstance(t[0], str) and t[0].strip():
            out[qid] = t[0].strip()
    return out


def _prometheus_first_answers(path: Path, source: str = "chatgpt") -> dict[int, str]:
    out = {}
    for row in rows(path):
        if row.get("response_source") != source:
            continue
        parts = prometheus_parts(row.text("instruction"))
        msgs = dialogue_messages(parts["instruction"]) if parts else None
        if isinstance(msgs, list) and isinstance(row.get("idx"), int) and msgs[1]["content"]:
            out[row.get("idx")] = msgs[1]["content"]
    return out


def load_mt_bench_multiturn(path: Path) -> Loaded:
    """Second turns as 3-message prompts ``[user turn 1, assistant answer, user turn 2]``.

    The assistant answer is GPT-4's reference answer (``reference_answer_gpt-4.jsonl``, 30 questions);
    for the others it is ChatGPT's first-turn answer as embedded in Prometheus' MT-Bench file
    (``../prometheus_ratings/mt_bench_eval.json``, all 80 questions). ``meta["first_answer"]`` says which.
    Questions with neither are left out (counted in ``skipped``).
    """
    path = Path(path)
    qfile = need_file(path, "question.jsonl")
    folder = qfile.parent
    ref_file = folder / "reference_answer_gpt-4.jsonl"
    gpt4 = _gpt4_first_answers(ref_file) if ref_file.is_file() else {}
    prom_file = folder.parent / "prometheus_ratings" / "mt_bench_eval.json"
    chatgpt = _prometheus_first_answers(prom_file) if prom_file.is_file() else {}
    out, skipped = [], Counter()
    for row, qid, turns in _questions(qfile):
        if len(turns) < 2:
            skipped["no second turn"] += 1
            continue
        if qid in gpt4:
            answer, source = gpt4[qid], "gpt-4 reference"
        elif qid in chatgpt:
            answer, source = chatgpt[qid], "chatgpt (prometheus mt_bench_eval)"
        else:
            skipped["no first-turn answer"] += 1
            continue
        prompt = [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": answer},
                  {"role": "user", "content": turns[1]}]
        out.append(PromptRecord(prompt=prompt, id=str(qid),
                                meta={"category": row.get("category"), "turn": 2, "first_answer": source}))
    return Loaded(out, skipped)


# ------------------------------------------------------------------------------------------- AlpacaEval


def load_alpaca_outputs(path: Path) -> Loaded:
    """One response per (system, instruction); ``prompt_id`` is the instruction's index in the reference
    system's file (``gpt4_1106_preview``, 805 instructions), ``meta["system"]`` the system."""
    files = alpaca_files(path, "model_outputs")
    ref = [f for f in files if f.stem == ALPACA_REFERENCE]
    ordered = ref + [f for f in files if f.stem != ALPACA_REFERENCE]
    index: dict[str, int] = {}
    per_file = []
    for f in ordered:
        items = []
        for row in rows(f):
            ins = row.text("instruction")
            index.setdefault(ins, len(index))
            items.append((row, ins))
        per_file.append((f, items))
    out = []
    for f, items in sorted(per_file, key=lambda t: t[0].stem):
        for row, ins in items:
            system = row.get("generator") or f.stem
            pid = str(index[ins])
            meta = {"system": system}
            if isinstance(row.get("dataset"), str):
                meta["dataset"] = row.get("dataset")
            out.append(ResponseRecord(prompt=ins, completion=row.text("output", allow_empty=True),
                                      id=f"{system}:{pid}", prompt_id=pid, meta=meta))
    return Loaded(out, Counter())


def read_leaderboard(path: Path, column: str = "win_rate") -> dict[str, float]:
    """The AlpacaEval leaderboard CSV: system name -> ``column`` (``win_rate`` or
    ``length_controlled_winrate``, percent); systems with an empty cell are left out."""
    path = need_file(path, "leaderboard_weighted_alpaca_eval_gpt4_turbo.csv")
    text = _decode(path, path.read_bytes(), None)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(path, None, None, "empty file") from None
    if column not in header:
        raise DataError(path, 1, column, "column missing")
    name_col = header.index("name") if "name" in header else 0
    wr_col = header.index(column)
    out = {}
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) <= max(name_col, wr_col):
            raise DataError(path, line, column, "missing")
        name = row[name_col].strip()
        if not name:
            raise DataError(path, line, header[name_col] or "name", "empty")
        if column != "win_rate" and not row[wr_col].strip():
            continue
        try:
            out[name] = float(row[wr_col])
        except ValueError:
            raise DataError(path, line, column, f"expected a number, got {row[wr_col]!r}") from None
    return out
