"""Learning curves of the sim study's token RMs (``--rm-curve``): the pure pieces against hand-worked numbers,
the probe sees the weights of its own step, and the study reports a curve end to end on the tiny model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from finealign.errors import FinealignError
from finealign.studies.sim_curve import CURVE_KEYS, curve_log_every, window_losses
from finealign.studies.sim_summary import mean_curve


def test_curve_log_every_makes_every_curve_step_end_a_window():
    # gcd(100, 24, 50) = 2; gcd(30, 10, 20) = 10; no curve: a quarter of the run, at least 1
    assert curve_log_every(100, [24, 50]) == 2
    assert curve_log_every(30, [10, 20]) == 10
    assert curve_log_every(24, []) == 6 and curve_log_every(3, []) == 1


def test_window_losses_hand_worked():
    ev = [{"event": "train", "step": 2, "loss": 0.9}, {"event": "eval", "step": 2, "loss": 5.0},
          {"event": "train", "step": 4, "loss": 0.7}, {"event": "train", "step": 6, "loss": 0.4}]
    # step 4: (0.9 + 0.7) / 2 = 0.8 (the eval event is not a training loss); step 6: 0.4; step 8: nothing logged
    assert window_losses(ev, [6, 4, 8]) == {4: pytest.approx(0.8), 6: pytest.approx(0.4), 8: None}


def test_mean_curve_hand_worked():
    a = [{"step": 10, "token_auroc": 0.6, "train_loss": 1.0}, {"step": 20, "token_auroc": 0.7, "train_loss": None}]
    b = [{"step": 20, "token_auroc": 0.8, "train_loss": 0.5}]
    # only step 20 is in both; auroc (0.7 + 0.8) / 2 = 0.75; the loss is None in one seed: the other's 0.5
    assert mean_curve([a, b]) == [{"step": 20, "seeds": 2, "token_auroc": pytest.approx(0.75), "train_loss": 0.5}]
    assert mean_curve([]) == []


def test_the_probe_sees_the_weights_of_its_own_step(tmp_path):
    """A probe at step 2 of a 4-step run scores tokens as the step-2 checkpoint does, and not as the final model."""
    from finealign.models.token_rm import load_token_rm
    from finealign.rewards.token_rm import TokenRMScorer
    from finealign.train.token_rm import load_checkpoint_model, train_token_rm
    from finealign.train.token_rm_config import TokenRMConfig

    data = tmp_path / "edits.jsonl"
    rows = [{"prompt": f"Name {i} colours.", "original": f"Red, blue and {i} cats.",
             "edited": f"Red, blue and green {i}."} for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts, responses = ["Name 1 colours."], ["Red, blue and 1 cats."]
    seen, calls = {}, []

    def probe(step, model, tok):
        assert not model.training and not torch.is_grad_enabled()
        calls.append(step)
        seen[step] = TokenRMScorer("probe", model=model, tokenizer=tok).score_tokens(prompts, responses)[0].rewards

    cfg = TokenRMConfig(data=[str(data)], out=str(tmp_path / "rm"), model="tiny-random", loss="span_bt", steps=4,
                        batch_size=2, learning_rate=5e-2, save_every=2, eval_every=0, log_every=1, seed=0)
    train_token_rm(dataclasses.replace(cfg, stop_after=2), probe=probe, probe_steps={2})
    assert calls == [2]
    model, tok, step = load_checkpoint_model(tmp_path / "rm")  # the checkpoint written at step 2
    assert step == 2
    at2 = TokenRMScorer("ck", model=model, tokenizer=tok).score_tokens(prompts, responses)[0].rewards
    assert seen[2] == pytest.approx(at2, abs=1e-5)
    train_token_rm(cfg, probe=probe, probe_steps={2})  # resumes at 2: the probe of step 2 is not run again
    assert calls == [2]
    final_model, final_tok = load_token_rm(str(tmp_path / "rm"), device="cpu")
    final = TokenRMScorer("final", model=final_model, tokenizer=final_tok).score_tokens(prompts, responses)[0].rewards
    assert final != pytest.approx(seen[2], abs=1e-5)  # training moved the weights after the probe


FLAGS = ["--quick", "--model", "tiny-random", "--n", "10", "--heldout", "4", "--k", "2", "--max-new-tokens", "8",
         "--sizes", "4", "--rm-steps", "4", "--rm-batch", "2", "--eval-limit", "10", "--mixed-precision", "no",
         "--stages", "data", "rm", "--sources", "span_bt", "token_cls", "dpo"]


def test_study_reports_each_token_rms_learning_curve(tmp_path, capsys):
    from finealign.studies import sim_study

    out = tmp_path / "q"
    res = sim_study.main(FLAGS + ["--out", str(out), "--rm-curve", "2", "--png-prefix", str(tmp_path / "p")],
                         echo=False)
    rows = {r["source"]: r for r in res["reward_models"]}
    assert "curve" not in rows["dpo"]  # a DPO policy has no curve
    for src in ("span_bt", "token_cls"):
        curve = rows[src]["curve"]
        assert [p["step"] for p in curve] == [2, 4] and curve[0]["seeds"] == 1
        # the last point is the row's own final evaluation; each point has the training loss of its window
        assert curve[-1]["token_auroc"] == rows[src]["token_auroc"]
        assert all(p["train_loss"] is not None and p["train_loss"] > 0 for p in curve)
        stored = json.loads(next((out / "rm").rglob(f"{src}_n4/sim_curve.json")).read_text())
        assert list(stored) == ["2"] and set(stored["2"]) == set(CURVE_KEYS) and 0 <= stored["2"]["edit_acc"] <= 1
    assert (tmp_path / "p_rm_curve.png").stat().st_size > 0
    # a rerun trains nothing and reports the same curve; a curve step asked for after training is named missing
    capsys.readouterr()
    again = sim_study.main(FLAGS + ["--out", str(out), "--rm-curve", "1", "2"], echo=False)
    assert {r["source"]: r.get("curve") for r in again["reward_models"]} == {s: r.get("curve") for s, r in rows.items()}
    assert "trained without curve points at steps 1" in capsys.readouterr().err


def test_a_curve_step_at_or_past_rm_steps_is_refused_before_any_work(tmp_path):
    from finealign.studies import sim_study

    with pytest.raises(FinealignError, match="rm_curve: 4 0: each step must lie between 1 and rm_steps - 1"):
        sim_study.main(FLAGS + ["--out", str(tmp_path / "x"), "--rm-curve", "2", "4", "0"], echo=False)
    assert not (tmp_path / "x").exists()
