"""How minimal are an LLM editor's edits, next to human minimal edits of the same responses?

Runs ``finealign edit`` (the resumable job, same code) with ``--editor`` on the first ``--n``
DeFacto validation summaries that have a human correction, then prints JSON: the minimality
guard's counts for the editor's edits and for the human edits of the same summaries (the
baseline), and the overlap of the original words each one changed (precision / recall of the
editor's changed words against the human's, pooled over all records).

    python benchmarks/editor_minimality.py --n 10 --editor local:smollm2-135m-instruct

The output file is resumable: a rerun with the same ``--out`` only computes what is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def changed_units(original: str, edited: str) -> set[int]:
    """Indices of the original's non-space word units that overlap a changed span."""
    from finealign.core.align import diff_char_spans, split_units

    spans, _ = diff_char_spans(original, edited)
    units = [u for u in split_units(original) if not u.text.isspace()]
    return {i for i, u in enumerate(units) if any(s < u.end and u.start < e for s, e in spans)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--editor", default="local:smollm2-135m-instruct")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--out", default="/tmp/finealign_editor_minimality/edits.jsonl")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--max-ratio", type=float, default=0.5)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from finealign.data.adapters import load_dataset
    from finealign.data.io import write_jsonl
    from finealign.edits.editors import make_editor
    from finealign.edits.minimality import MinimalityConfig, MinimalityStats, check_edit
    from finealign.edits.run import EditJobConfig, run_edits

    out = Path(args.out)
    inp = out.with_name("defacto_val_input.jsonl")
    recs = load_dataset("defacto-val")[: args.n]
    write_jsonl(inp, recs)
    editor = make_editor(args.editor, base_url=args.base_url, batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens)
    t0 = time.perf_counter()
    stats = run_edits(editor, inp, out, EditJobConfig(MinimalityConfig(args.max_ratio), args.n), progress=False)
    seconds = time.perf_counter() - t0
    edits = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        o = json.loads(line)
        edits[o["id"]] = o
    human = [check_edit(r.original, r.edited, args.max_ratio) for r in recs]
    model = [check_edit(e["original"], e["edited"], args.max_ratio) for e in edits.values()]
    tp = n_model = n_human = exact = 0
    for r in recs:
        if str(r.id) not in edits:
            continue
        m = changed_units(r.original, edits[str(r.id)]["edited"])
        h = changed_units(r.original, r.edited)
        tp, n_model, n_human = tp + len(m & h), n_model + len(m), n_human + len(h)
        exact += edits[str(r.id)]["edited"].strip() == r.edited.strip()
    print(json.dumps({
        "data": f"DeFacto val, first {len(recs)} summaries with a human correction",
        "editor": editor.name, "template": editor.template.id,
        "edited": len(edits), "failed": stats.failed, "failure_reasons": stats.failure_reasons,
        "editor_guard": MinimalityStats.from_verdicts(model, args.max_ratio).to_dict(),
        "human_guard": MinimalityStats.from_verdicts(human, args.max_ratio).to_dict(),
        "changed_words_vs_human": {"precision": round(tp / n_model, 4) if n_model else None,
                                   "recall": round(tp / n_human, 4) if n_human else None,
                                   "editor_changed": n_model, "human_changed": n_human},
        "identical_to_human_edit": exact,
        "seconds_this_run": round(seconds, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
