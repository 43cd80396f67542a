"""Build the small licence-compatible data bundled for ``finealign quickstart`` (resources/data/).

Run from the repository root with the shared data folder present:

    python3 scripts/bundle_quickstart_data.py /path/to/shared/data

Writes, under src/finealign/resources/data/:
  mt_bench_train.jsonl / mt_bench_eval.jsonl: MT-Bench first turns (Apache-2.0), 40 + 40, five per
    category each, interleaved by category (extraction, whose prompts hold long passages, last)
    so that the first N of a file cover the categories;
  expertqa_edits_train.jsonl: ExpertQA expert revisions (MIT) as minimal-edit records
    (prompt/original/edited), answers of at most 1,200 characters whose word-level similarity to the
    revision lies in [0.5, 0.99];
  expertqa_pairs_eval.jsonl: held-out ExpertQA revisions (other questions) as preference pairs
    (chosen = the expert's revision, rejected = the LLM answer).
The attribution is in resources/data/NOTICE.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "finealign" / "resources" / "data"
N_EVAL_PAIRS = 60


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{path.name}: {len(rows)} records")


def mt_bench(shared: Path) -> None:
    by_cat = defaultdict(list)
    for line in (shared / "mt_bench_questions" / "question.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        by_cat[q["category"]].append(q)
    train, evals = [], []
    order = ["writing", "roleplay", "reasoning", "math", "coding", "stem", "humanities", "extraction"]
    assert sorted(order) == sorted(by_cat)
    for i in range(10):
        for cat in order:  # the long extraction passages last in each round of categories
            q = by_cat[cat][i]
            rec = {"id": f"mt_bench_{q['question_id']}", "prompt": q["turns"][0],
                   "meta": {"source": "mt_bench", "question_id": q["question_id"], "category": cat}}
            (train if i < 5 else evals).append(rec)
    _write(OUT / "mt_bench_train.jsonl", train)
    _write(OUT / "mt_bench_eval.jsonl", evals)


def expertqa(shared: Path) -> None:
    rows = []
    path = shared / "expertqa_revised_answers" / "expertqa_lfqa_val_test_union.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        q, a, e = r["question"].strip(), (r.get("answer_string") or "").strip(), (r.get("revised_answer_string") or "").strip()
        if not q or not a or not e or a == e or len(a) > 1200:
            continue
        sim = difflib.SequenceMatcher(None, a.split(), e.split()).ratio()
        if 0.5 <= sim <= 0.99:
            rows.append((q, a, e, r.get("system")))
    questions = sorted({q for q, *_ in rows})
    held = set(questions[::3][: N_EVAL_PAIRS])  # every third question (sorted), disjoint from training
    train = [{"id": f"expertqa_{i}", "prompt": q, "original": a, "edited": e, "meta": {"source": "expertqa", "system": s}}
             for i, (q, a, e, s) in enumerate(rows) if q not in held]
    pairs = [{"id": f"expertqa_{i}", "prompt": q, "chosen": e, "rejected": a, "meta": {"source": "expertqa", "system": s}}
             for i, (q, a, e, s) in enumerate(rows) if q in held]
    _write(OUT / "expertqa_edits_train.jsonl", train)
    _write(OUT / "expertqa_pairs_eval.jsonl", pairs)


if __name__ == "__main__":
    shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
    OUT.mkdir(parents=True, exist_ok=True)
    mt_bench(shared)
    expertqa(shared)
