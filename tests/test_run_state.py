"""The trainers' shared run state: LR schedule, atomic checkpoints and their recovery, metrics log,
fingerprint; and both trainers killed at every stage of a save resume to the uninterrupted result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finealign.errors import FinealignError
from finealign.train import run_state
from finealign.train.run_state import SAVE_STAGES, lr_factor

from conftest import REPO

PROMPTS = REPO / "src" / "finealign" / "resources" / "prompts" / "mt_bench_demo.jsonl"
TIMING = {"seconds", "tokens_per_s", "seconds_generate", "seconds_reward", "seconds_ref_value", "seconds_update"}


# ----------------------------------------------------------------------------- learning-rate schedule


def test_warmup_and_decay_hand_worked():
    f = lambda sched, i: lr_factor(i, schedule=sched, warmup_steps=2, total_steps=6)  # noqa: E731
    # warmup: step / warmup -> 0/2, 1/2, then the schedule from step 2 on
    assert [f("constant", i) for i in range(5)] == [0.0, 0.5, 1.0, 1.0, 1.0]
    # linear: (total - step) / (total - warmup) = 4/4, 3/4, 2/4, 1/4 at steps 2..5, 0 at 6
    assert [f("linear", i) for i in range(7)] == [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    # cosine: 0.5 * (1 + cos(pi * (step - 2) / 4)): step 2 -> 1, step 4 -> 0.5, step 6 -> 0
    assert f("cosine", 2) == 1.0 and f("cosine", 4) == pytest.approx(0.5) and f("cosine", 6) == pytest.approx(0.0)
    # no warmup: the first step uses the full rate
    assert lr_factor(0, schedule="linear", warmup_steps=0, total_steps=4) == 1.0
    with pytest.raises(FinealignError, match="lr schedule"):
        lr_factor(0, schedule="step", warmup_steps=0, total_steps=4)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_schedule_equals_hugging_face(schedule):
    import transformers

    make = {"constant": lambda o: transformers.get_constant_schedule_with_warmup(o, 3),
            "linear": lambda o: transformers.get_linear_schedule_with_warmup(o, 3, 11),
            "cosine": lambda o: transformers.get_cosine_schedule_with_warmup(o, 3, 11)}[schedule]
    ours, theirs = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0) for _ in range(2))
    a = run_state.make_scheduler(ours, schedule=schedule, warmup_steps=3, total_steps=11)
    b = make(theirs)
    for _ in range(12):
        assert a.get_last_lr()[0] == pytest.approx(b.get_last_lr()[0], abs=1e-12)
        ours.step(), theirs.step(), a.step(), b.step()


# ----------------------------------------------------------------------------- checkpoints


class Killed(Exception):
    pass


def _kill_at(stage: str, save_no: int):
    """A fault hook that raises at ``stage`` of the ``save_no``-th save (1-based), and records the stages seen."""
    seen: list[tuple[int, str]] = []

    def hook(s: str) -> None:
        n = sum(1 for _, x in seen if x == "begin") + (s == "begin")
        seen.append((n, s))
        if n == save_no and s == stage:
            raise Killed(f"killed at {stage} of save {save_no}")

    hook.seen = seen
    return hook


def _save(out: Path, step: int, value: float):
    p = torch.nn.Parameter(torch.full((2,), value))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = run_state.make_scheduler(opt, schedule="constant", warmup_steps=0, total_steps=1)
    run_state.save_checkpoint(out, step=step, trainable={"w": p.detach().clone()}, optimizer=opt, scheduler=sched,
                              fingerprint={"seed": 0}, extra={"value": value})


@pytest.mark.parametrize("stage", SAVE_STAGES)
def test_interrupted_save_recovers_a_complete_checkpoint(tmp_path, monkeypatch, stage):
    _save(tmp_path, 1, 1.0)
    monkeypatch.setattr(run_state, "fault_hook", _kill_at(stage, 1))
    with pytest.raises(Killed):
        _save(tmp_path, 2, 2.0)
    monkeypatch.setattr(run_state, "fault_hook", None)
    ck = run_state.load_checkpoint(tmp_path, {"seed": 0})
    # before the new checkpoint is in place the old one (step 1) is restored; after, the new one (step 2)
    expect = 2 if stage == "renamed" else 1
    assert ck.step == expect and ck.extra == {"value": float(expect)}
    assert torch.equal(ck.trainable["w"], torch.full((2,), float(expect)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no temp or old folder left


def test_fingerprint_refuses_another_run_and_rng_roundtrip(tmp_path):
    _save(tmp_path, 1, 1.0)
    with pytest.raises(FinealignError, match=r"another configuration \(seed differ\)"):
        run_state.load_checkpoint(tmp_path, {"seed": 1})
    # a field missing from an older checkpoint counts as its default
    assert run_state.load_checkpoint(tmp_path, {"seed": 0, "new": 3}, defaults={"new": 3}).step == 1
    state = run_state.capture_rng()
    a = (torch.rand(3), __import__("random").random())
    run_state.restore_rng(state)
    assert torch.equal(torch.rand(3), a[0]) and __import__("random").random() == a[1]


def test_metrics_log_truncates_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1}\n{"step": 2, "loss": 2}\n{"step": 2, "event": "eval"}\n'
                    '{"step": 3, "loss": 3}\n{"step": 4, "lo')  # a torn last line of a killed run
    log = run_state.MetricsLog(tmp_path, 2)
    log.append({"step": 3, "loss": 3.5})
    log.close()
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"step": 1, "loss": 1}, {"step": 2, "loss": 2}, {"step": 2, "event": "eval"}, {"step": 3, "loss": 3.5}]


# ----------------------------------------------------------------------------- trainers killed mid-save


def _rows(out: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [{k: v for k, v in json.loads(x).items() if k not in TIMING}
            for x in (out / name).read_text().splitlines()]


def _tensors(out: Path) -> dict:
    from safetensors.torch import load_file

    t = {f"ck/{k}": v for k, v in torch.load(out / "checkpoint" / "trainable.pt").items()}
    for f in sorted(out.rglob("*.safetensors")):
        t.update({f"{f.relative_to(out)}/{k}": v for k, v in load_file(str(f)).items()})
    return t


def _assert_same_run(a: Path, b: Path, logs: tuple[str, ...]) -> None:
    for name in logs:
        assert _rows(a, name) == _rows(b, name), name
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert sorted(p.name for p in b.iterdir() if p.name.startswith(".")) == []


def _kill_then_resume(run, cfg_for, tmp_path, monkeypatch, stage: str, save_no: int) -> Path:
    """Run ``cfg_for(name)`` killed at ``stage`` of save ``save_no``, then again; returns its folder."""
    cfg = cfg_for(f"{stage}-{save_no}")
    hook = _kill_at(stage, save_no)
    monkeypatch.setattr(run_state, "fault_hook", hook)
    with pytest.raises(Killed):
        run(cfg)
    monkeypatch.setattr(run_state, "fault_hook", None)
    run(cfg)
    return Path(cfg.out)


def _ppo_cfg(tmp_path):
    from finealign.train.ppo_config import PPOConfig

    def make(name):
        return PPOConfig(model="tiny-random", reward="length", prompts=str(PROMPTS), out=str(tmp_path / name), steps=3,
                         batch_size=2, minibatch_size=2, micro_batch_size=1, ppo_epochs=1, max_new_tokens=5,
                         device="cpu", learning_rate=1e-3, save_every=2, log_samples_every=1, warmup_steps=1,
                         lr_schedule="linear")
    return make


def _token_rm_cfg(tmp_path):
    from finealign.data.io import write_jsonl
    from finealign.train.token_rm import TokenRMConfig

    pairs = [("What is the capital of France?", "It is Lyon.", "It is Paris."),
             ("Name a colour.", "Blue, I think, maybe.", "Blue."),
             ("What is 2 + 2?", "2 + 2 = 5.", "2 + 2 = 4."),
             ("Summarize: the cat sat.", "A dog sat.", "A cat sat.")]
    data = tmp_path / "edits.jsonl"
    write_jsonl(data, [{"prompt": p, "original": o, "edited": e} for p, o, e in pairs])

    def make(name):
        # saves at steps 3 and 5, logs at 2, 4 and 5: the log window is open at every checkpoint
        return TokenRMConfig(data=[str(data)], eval_data=[str(data)], out=str(tmp_path / name), model="tiny-random",
                             steps=5, batch_size=2, learning_rate=5e-2, max_length=64, save_every=3, log_every=2,
                             eval_every=2, warmup_steps=2, lora=False, top_layers=1)
    return make


# every stage of the second save (a previous checkpoint exists), and the first save before its rename
KILLS = [(s, 2) for s in SAVE_STAGES] + [("written", 1)]


@pytest.mark.parametrize("trainer", ["ppo", "token-rm"])
def test_trainer_killed_at_every_stage_of_a_save_resumes_exactly(tmp_path, monkeypatch, trainer):
    if trainer == "ppo":
        from finealign.train.ppo import train_ppo as run

        cfg_for, logs = _ppo_cfg(tmp_path), ("metrics.jsonl", "samples.jsonl")
    else:
        from finealign.train.token_rm import train_token_rm as run

        cfg_for, logs = _token_rm_cfg(tmp_path), ("metrics.jsonl",)
    full = cfg_for("full")
    run(full)
    for stage, save_no in KILLS:
        out = _kill_then_resume(run, cfg_for, tmp_path, monkeypatch, stage, save_no)
        _assert_same_run(Path(full.out), out, logs)
