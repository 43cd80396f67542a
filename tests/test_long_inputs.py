"""Inputs longer than the model's window (issue 17, faults 3-4): every verb applies the policy of
docs/long-inputs.md (cut the oldest context, counted and reported; or refuse that record with a
located reason), the other records are written, and the process's peak memory stays bounded.

Each verb runs in a fresh subprocess so its peak RSS (``resource.getrusage``) is its own. The tiny
model's window is 1,024 tokens; the long inputs below are about 6,000 tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finealign.core.batching import length_batches

LONG = "word " * 6000  # ~6,000 tokens of the tiny model's tokenizer: about 6x its window
RSS_LIMIT_MB = 2500  # a tiny-model process is ~0.6-1 GB; an uncut 6k-token batch with padding goes far above

_CHILD = """
import json, resource, sys
from finealign.cli.main import main
rc = main(json.loads(sys.argv[1]))
print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)
sys.exit(rc)
"""


def run_verb(args: list, cwd: Path, timeout: int = 600) -> tuple[int, str, str, int]:
    """``finealign ARGS`` in a fresh process: (exit code, stdout, stderr, peak RSS in MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([str(a) for a in args])], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    peak = [int(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("PEAK_RSS_MB")]
    assert peak, f"no peak RSS reported (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.returncode, proc.stdout, proc.stderr, peak[0]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# ------------------------------------------------------------------------------------ pure parts


def test_length_batches_hand_worked():
    # lengths 5, 100, 6, 7; 2 rows at most; 50 padded tokens at most:
    # sorted 0(5), 2(6), 3(7), 1(100) -> [0, 2] (2 x 6 = 12 <= 50), [3] (a third row is over max_rows),
    # [1] alone (1 x 100 > 50, and 2 x 100 with 3 would be too)
    assert length_batches([5, 100, 6, 7], max_rows=2, max_tokens=50) == [[0, 2], [3], [1]]
    # budget: 3 rows of 10 = 30 <= 30, a fourth would be 40
    assert length_batches([10, 10, 10, 10], max_rows=8, max_tokens=30) == [[0, 1, 2], [3]]
    # similar lengths only: 512 > 2 x 20 + 32 = 72 runs alone although 3 x 512 fits the budget
    assert length_batches([20, 512, 20], max_rows=4, max_tokens=4096) == [[0, 2], [1]]


@pytest.mark.parametrize("rows,budget", [(1, None), (3, 64), (8, 1000)])
def test_length_batches_invariants(rows, budget):
    import random

    rng = random.Random(rows)
    lengths = [rng.randint(1, 200) for _ in range(40)]
    batches = length_batches(lengths, rows, budget)
    assert sorted(i for b in batches for i in b) == list(range(40))  # every item once
    for b in batches:
        assert len(b) <= rows
        if len(b) > 1:
            longest, shortest = max(lengths[i] for i in b), min(lengths[i] for i in b)
            assert longest <= 2 * shortest + 32
            assert budget is None or len(b) * longest <= budget


def test_fit_prompt_cuts_oldest_context_first(tiny):
    from finealign.generation import render_prompt
    from finealign.models.window import fit_prompt

    _, tok = tiny

    def n(p):
        return len(tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"])

    convo = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "first " * 300}, {"role": "assistant", "content": "answer " * 300},
             {"role": "user", "content": "Now the real question: what is two plus two?"}]
    budget = n(convo[:1] + convo[-1:]) + 5
    fit = fit_prompt(tok, convo, budget)
    # the old turns went whole; the system message and the last question stayed
    assert fit.prompt == convo[:1] + convo[-1:] and fit.tokens <= budget and fit.cut_tokens == n(convo) - fit.tokens
    one = "oldest " * 500 + "newest words at the end"
    fit = fit_prompt(tok, one, 64)
    assert fit.tokens <= 64 and fit.prompt[-1]["content"].endswith("newest words at the end")
    assert fit_prompt(tok, "short", 64).cut_tokens == 0 and fit_prompt(tok, "short", 64).prompt == "short"


# ------------------------------------------------------------------------------------ every verb


def test_generate_cuts_an_over_long_prompt_and_writes_the_others(tmp_path):
    prompts = _jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "Name a colour."}, {"id": "long", "prompt": LONG},
                                           {"id": "c", "prompt": "Count to three."}])
    out = tmp_path / "g.jsonl"
    rc, stdout, stderr, peak = run_verb(["generate", "--model", "tiny-random", "--prompts", prompts, "--out", out,
                                         "-k", "2", "--max-new-tokens", "8", "--batch-size", "6", "-q"], tmp_path)
    assert rc == 0, stderr[-3000:]
    rows = _read(out)
    assert sorted(r["id"] for r in rows) == ["a:0", "a:1", "c:0", "c:1", "long:0", "long:1"]
    cut = {r["prompt_id"]: r["meta"].get("prompt_cut_tokens", 0) for r in rows}
    assert cut["long"] > 4000 and cut["a"] == 0 and cut["c"] == 0  # ~6,000 tokens into a 1,024 window
    assert rows[0]["prompt"] in ("Name a colour.", LONG, "Count to three.")  # the record keeps the original prompt
    assert "prompts cut to fit the window: 1" in stdout
    assert peak < RSS_LIMIT_MB


@pytest.mark.parametrize("scorer", ["direct:tiny-random", "flr:tiny-random"])
def test_score_cuts_oldest_tokens_and_scores_every_record(tmp_path, scorer):
    rows = [{"prompt": "Say hi.", "completion": "Hi there."}, {"prompt": LONG, "completion": "A reply to a long prompt."},
            {"prompt": "Say bye.", "completion": LONG}, {"prompt": "Again?", "completion": "Yes, again."}]
    inp = _jsonl(tmp_path / "r.jsonl", rows)
    out = tmp_path / "s.jsonl"
    rc, stdout, stderr, peak = run_verb(["score", "--scorer", scorer, inp, out, "--max-length", "256", "-q"], tmp_path)
    assert rc == 0, stderr[-3000:]
    scored = _read(out)
    assert len(scored) == 4 and all(isinstance(r["score"], float) for r in scored)
    assert "truncated contexts: 2" in stdout
    assert peak < RSS_LIMIT_MB
    if not scorer.startswith("direct"):
        return
    # --max-chars cuts responses before scoring (the record keeps its text): only the long prompt is cut now
    out2 = tmp_path / "s2.jsonl"
    rc, stdout, stderr, _ = run_verb(["score", "--scorer", scorer, inp, out2, "--max-length", "256",
                                      "--max-chars", "200", "-q"], tmp_path)
    assert rc == 0, stderr[-3000:]
    assert "truncated contexts: 1" in stdout and [r["completion"] for r in _read(out2)] == [r["completion"] for r in rows]


def test_label_with_an_over_long_response_labels_every_prompt(tmp_path):
    rows = [{"id": f"{p}:{s}", "prompt_id": p, "sample": s, "prompt": f"Question {p}?",
             "completion": (LONG if (p, s) == ("q1", 0) else f"Answer {s} to {p}" + "!" * s)}
            for p in ("q0", "q1", "q2") for s in range(2)]
    gen = _jsonl(tmp_path / "gen.jsonl", rows)
    out = tmp_path / "pairs.jsonl"
    rc, stdout, stderr, peak = run_verb(["label", "--scorer", "direct:tiny-random", gen, out, "--format", "dpo", "-q"],
                                        tmp_path)
    assert rc == 0, stderr[-3000:]
    labeled = json.dumps(_read(out))
    assert len(_read(out)) == 3 and all(f"Question {q}?" in labeled for q in ("q0", "q1", "q2"))
    assert peak < RSS_LIMIT_MB


def test_eval_rm_with_an_over_long_pair_evaluates_every_item(tmp_path):
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"Q{i}?", "chosen": LONG if i == 1 else f"Good {i}.",
                                               "rejected": f"Bad {i}."} for i in range(4)])
    out = tmp_path / "ev"
    rc, stdout, stderr, peak = run_verb(["eval-rm", "--scorer", "direct:tiny-random", "--benchmark", pairs,
                                         "--out", out, "-q", "--n-boot", "50"], tmp_path)
    assert rc == 0, stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert json.dumps(res).count('"n": 4') >= 1, res  # all 4 pairs evaluated
    assert peak < RSS_LIMIT_MB


def test_edit_refuses_an_over_long_response_with_its_reason_and_edits_the_others(tmp_path):
    pairs = _jsonl(tmp_path / "pairs.jsonl", [
        {"id": "p1", "prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
        {"id": "long", "prompt": "Tell me everything.", "chosen": "No.", "rejected": LONG},
        {"id": "p3", "prompt": "Two plus two?", "chosen": "4", "rejected": "Five."}])
    out = tmp_path / "edits.jsonl"
    rc, stdout, stderr, peak = run_verb(["edit", pairs, out, "--editor", "local:tiny-random", "--max-new-tokens", "12",
                                         "-q"], tmp_path)
    assert rc == 0, stderr[-3000:]
    failed = _read(out.with_name(out.stem + ".failed.jsonl"))
    assert {f["id"]: f["reason"] for f in failed}.get("long") == "context"
    done = {r["id"] for r in _read(out)} | {f["id"] for f in failed}
    assert done == {"p1", "long", "p3"}
    assert peak < RSS_LIMIT_MB


def test_train_token_rm_skips_an_over_long_pair_and_trains_on_the_others(tmp_path):
    recs = [{"id": str(i), "prompt": f"Question {i}?", "original": f"The answer is {i + 1}.",
             "edited": f"The answer is {i}."} for i in range(4)]
    recs += [{"id": "longprompt", "prompt": LONG, "original": "It is blue.", "edited": "It is red."},
             {"id": "longresp", "prompt": "Describe.", "original": LONG, "edited": LONG + " end"}]
    data = _jsonl(tmp_path / "edits.jsonl", recs)
    rc, stdout, stderr, peak = run_verb(["train", "token-rm", "--data", data, "--model", "tiny-random", "--out",
                                         tmp_path / "rm", "--max-steps", "1", "--batch-size", "2", "--max-length", "64",
                                         "--no-progress", "--full", "--top-layers", "1"], tmp_path)
    assert rc == 0, stderr[-3000:]
    both = stdout + stderr
    assert "5/6 pairs kept" in both and "1 over the context window" in both  # the long prompt was cut, not dropped
    assert peak < RSS_LIMIT_MB


def test_train_ppo_cuts_over_long_prompts(tmp_path):
    prompts = _jsonl(tmp_path / "p.jsonl", [{"prompt": LONG}, {"prompt": "Say something nice."}])
    rc, stdout, stderr, peak = run_verb(["train", "ppo", "--model", "tiny-random", "--reward", "length", "--prompts",
                                         prompts, "--out", tmp_path / "ppo", "--steps", "1", "--batch-size", "2",
                                         "--minibatch-size", "2", "--micro-batch-size", "1", "--max-new-tokens", "4",
                                         "--device", "cpu", "--quiet"], tmp_path)
    assert rc == 0, stderr[-3000:]
    assert peak < RSS_LIMIT_MB


def test_train_dpo_cuts_the_oldest_context_of_over_long_pairs(tmp_path):
    pairs = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": LONG if i == 0 else f"Q{i}?", "chosen": f"Good {i}.",
                                               "rejected": f"Bad {i}."} for i in range(4)])
    rc, stdout, stderr, peak = run_verb(["train", "dpo", "--data", pairs, "--out", tmp_path / "dpo", "--model",
                                         "tiny-random", "--steps", "1", "--batch-size", "2", "--max-length", "128",
                                         "--lora"], tmp_path)
    assert rc == 0, stderr[-3000:]
    assert "prompts cut to fit max_length: 1" in stdout + stderr
    assert peak < RSS_LIMIT_MB


@pytest.mark.parametrize("spec", ["direct", "flr"])
def test_scorers_batch_by_length_so_a_long_item_runs_alone(tiny, spec):
    """The model never sees a short item padded up to a long one's length, and every score equals
    the item scored on its own (batch composition does not change a score)."""
    from finealign.rewards import load_scorer

    model, tok = tiny
    scorer = load_scorer(f"{spec}:tiny-random,batch_size=4,max_length=512", model=model, tokenizer=tok)
    shapes = []  # (rows, tokens) of every padded batch (2-D attention mask; FLR's follow-up tree pass is 4-D)

    def record(_m, _a, kw):
        mask = kw.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            shapes.append(tuple(mask.shape))

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        prompts = ["Say hi.", "Q?", "Say bye.", "Again?"]
        texts = ["Hi there.", "word " * 400, "Bye now.", "Yes."]
        together = scorer.score(prompts, texts)
        long_rows = [s for s in shapes if s[1] >= 400]
        assert long_rows and all(s[0] == 1 for s in long_rows)  # the long item's batch holds it alone
        shapes.clear()
        alone = [scorer.score([p], [t])[0] for p, t in zip(prompts, texts)]
    finally:
        hook.remove()
    assert together == pytest.approx(alone, abs=1e-4)


def test_token_rm_scorer_cuts_an_over_long_response_instead_of_failing_the_batch():
    from finealign.models.token_rm import new_token_rm
    from finealign.rewards.token_rm import TokenRMScorer

    model, tok = new_token_rm("tiny-random", mode="full", seed=0)
    model.eval()
    scorer = TokenRMScorer("mem", max_length=64, batch_size=4, model=model, tokenizer=tok)
    prompts, texts = ["Hi?", "Q?", "Bye?"], ["Hello.", "word " * 200, "Goodbye."]
    scores = scorer.score_tokens(prompts, texts)
    assert len(scores) == 3 and scorer.stats.truncated == 1
    # the long response kept its end: its last scored token ends at the end of the text
    assert scores[1].offsets[-1][1] == len(texts[1].rstrip()) or scores[1].offsets[-1][1] == len(texts[1])
    assert len(scores[1].rewards) <= 64
    # the short ones are scored as they would be alone
    assert scores[0].rewards == pytest.approx(scorer.score_tokens(prompts[:1], texts[:1])[0].rewards, abs=1e-5)
