"""`finealign train followup-sft`: role-swapped rows, context cutting, Prometheus feedback, training."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli
from finealign.errors import DataError
from finealign.rewards.roleswap import SYSTEM, roleswap_messages
from finealign.train.followup_sft import fit_rows, prometheus_feedback, read_feedback, sft_rows


def test_rows_use_the_roleswap_template():
    rows = sft_rows([{"prompt": "What is 2+2?", "response": "4.", "feedback": "Correct and brief."}])
    assert rows[0]["prompt"] == roleswap_messages("What is 2+2?", "4.")
    assert rows[0]["prompt"][0] == {"role": "system", "content": SYSTEM}
    assert rows[0]["prompt"][-1] == {"role": "user", "content": "4."}  # the response is the user's turn
    assert rows[0]["completion"] == [{"role": "assistant", "content": "Correct and brief."}]


def test_fit_rows_cuts_oldest_context_keeps_feedback(tiny):
    _, tok = tiny
    prompt = [{"role": "user", "content": "old question " * 40}, {"role": "assistant", "content": "old answer " * 40},
              {"role": "user", "content": "new question?"}]
    rows = sft_rows([{"prompt": prompt, "response": "start " + "word " * 60 + "THE END", "feedback": "Fine."}])
    kept, cut, dropped = fit_rows(rows, tok, 200)
    assert (cut, dropped) == (1, 0)
    msgs = kept[0]["prompt"]
    n = len(tok.apply_chat_template(msgs + kept[0]["completion"], tokenize=True)["input_ids"])
    assert n <= 200
    assert msgs[0]["content"] == SYSTEM and msgs[-1]["content"].endswith("THE END")  # the response's end is kept
    assert kept[0]["completion"][0]["content"] == "Fine."
    assert all("old question" not in m["content"] for m in msgs)  # the oldest turn went first
    # a row that already fits is unchanged
    short = sft_rows([{"prompt": "q", "response": "r", "feedback": "f"}])
    assert fit_rows(short, tok, 200)[0] == short


def test_prometheus_feedback_from_raw_json(shared_data):
    ex = prometheus_feedback(shared_data / "prometheus_ratings" / "vicuna_eval.json", feedback_per_item=2)
    assert len(ex) == 640  # 320 items x 2 of their 3 GPT-4 rationales
    assert all(e["feedback"] and e["response"] for e in ex)
    assert ex[0]["id"].endswith(":0") and ex[1]["id"].endswith(":1")
    assert len(read_feedback("prometheus-mt-bench")) == 320


def test_read_feedback_file_errors(tmp_path):
    bad = tmp_path / "fb.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "response": "r", "feedback": "ok"}) + "\n"
                   + json.dumps({"prompt": "q", "response": "r"}) + "\n")
    with pytest.raises(DataError, match="fb.jsonl:2: feedback: missing"):
        read_feedback(bad)


def test_cli_trains_tiny_model(tmp_path):
    from finealign.models import load_model

    data = tmp_path / "fb.jsonl"
    rows = [{"prompt": f"Tell me about {w}.", "response": f"{w} is nice.", "feedback": "That answers my question."}
            for w in ("the sea", "France", "a fox", "poems")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "fu"
    assert run_cli(["train", "followup-sft", "--model", "tiny-random", "--data", data, "--out", out, "--no-lora",
                    "--steps", "2", "--batch-size", "2", "--lr", "1e-2", "--max-length", "256"]) == 0
    meta = json.loads((out / "finealign_train.json").read_text())
    assert meta["steps"] == 2 and meta["trainer"] == "followup-sft"
    base, _ = load_model("tiny-random")
    trained, _ = load_model(str(out))
    b, t = dict(base.named_parameters()), dict(trained.named_parameters())
    assert any(not torch.equal(b[n], t[n]) for n in b)
    # the trained follow-up model scores through the FLR scorer's finetuned mode
    from finealign.rewards import load_scorer

    s = load_scorer(f"flr:{out},mode=finetuned")
    assert len(s.score(["Tell me about France."], ["France is nice."])) == 1


def test_cli_bad_input(tmp_path):
    assert run_cli(["train", "followup-sft", "--model", "tiny-random", "--data", tmp_path / "none.jsonl",
                    "--out", tmp_path / "o"]) == 1
    y = tmp_path / "r.yaml"
    y.write_text("lora: [oops\n")
    assert run_cli(["train", "followup-sft", "--config", y, "--data", "x", "--out", tmp_path / "o"]) == 1


@pytest.mark.slow
def test_followup_sft_default_model_lora_step(tmp_path):
    """One LoRA step on the real default model with 2 Prometheus feedback examples (< 60 s)."""
    from finealign.train.followup_sft import FollowupSFTConfig, train_followup

    cfg = FollowupSFTConfig(data="prometheus-vicuna", out=tmp_path / "fu", limit=2, steps=1, batch_size=2,
                            max_length=512)
    res = train_followup(cfg)
    assert res.steps == 1 and (tmp_path / "fu" / "adapter_config.json").exists()
    assert res.metrics["train_loss"] > 0
