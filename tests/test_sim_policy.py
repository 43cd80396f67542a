"""``finealign sim policy``: synthetic answers, the task tokenizer, a tiny end-to-end run that every verb loads,
resume, and the refusals (unknown task, error rate outside [0, 1], a policy made for another task)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from conftest import run_cli
from finealign.errors import FinealignError
from finealign.sim import make_task
from finealign.sim.answers import synth_answer

TASK_SETTINGS = [("facts", ""), ("facts", "slots=2"), ("constraints", ""), ("constraints", "required=3,letter=false"),
                 ("arithmetic", ""), ("arithmetic", "steps=3")]
TINY = ["--size", "tiny", "--device", "cpu", "-q"]


@pytest.mark.parametrize("name,options", TASK_SETTINGS)
def test_synthetic_answers_follow_the_error_rate(name, options):
    task = make_task(name, options)
    rng = random.Random(1)
    insts = task.sample(rng, 25)
    for inst in insts:  # error rate 0: the gold scorer finds nothing wrong, in every style
        for _ in range(6):
            answer = synth_answer(task, inst, rng, 0.0)
            assert task.judge(inst, answer).perfect, (inst.prompt, answer)
    # error rate 1: every item is wrong, so no answer reaches the maximum
    assert not any(task.judge(i, synth_answer(task, i, rng, 1.0)).perfect for i in insts)
    mean = {e: sum(task.judge(i, synth_answer(task, i, rng, e)).score for i in insts for _ in range(4)) / 100
            for e in (0.2, 0.8)}
    assert mean[0.2] > mean[0.8]


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_error_rate_outside_unit_interval_is_refused(rate):
    task = make_task("facts")
    with pytest.raises(FinealignError, match="error rate must lie in"):
        synth_answer(task, task.sample(random.Random(0), 1)[0], random.Random(0), rate)


@pytest.mark.parametrize("name", ["facts", "constraints", "arithmetic"])
def test_task_tokenizer_round_trip_and_chat_template(name):
    from finealign.data.chat import generation_prompt_text, render_pair, turn_end_text
    from finealign.sim.policy_model import EOS, task_corpus, train_tokenizer

    task = make_task(name)
    tok = train_tokenizer(task_corpus(task, 0, 200), 400)
    assert len(tok) <= 400 and tok.eos_token == EOS and tok.pad_token != tok.eos_token
    fresh = task.sample(random.Random(99), 20)
    texts = [i.prompt for i in fresh] + [synth_answer(task, i, random.Random(2), 0.5) for i in fresh]
    texts += ["Ünïcode ✓ and\ttabs\n", ""]  # bytes the corpus never had
    for t in texts:
        assert tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t
    # the closed assistant turn ends with EOS (then the template's newline); the open one is ChatML's
    pair = render_pair(tok, fresh[0].prompt, "An answer.")
    ids = tok(pair.text, add_special_tokens=False)["input_ids"]
    assert tok.eos_token_id in ids[-2:] and turn_end_text(tok).startswith(EOS)
    assert generation_prompt_text(tok) == "<|im_start|>assistant\n"


def test_sft_labels_cover_the_answer_and_eos_only():
    from finealign.sim.policy_model import IGNORE, sft_batch, train_tokenizer

    task = make_task("arithmetic")
    tok = train_tokenizer(["Tom has 3 apples. The answer is 3."] * 10, 300)
    insts = task.sample(random.Random(0), 3)
    b = sft_batch(tok, task, insts, random.Random(0), 0.0)
    for row in range(3):
        lab, ids, mask = b["labels"][row], b["input_ids"][row], b["attention_mask"][row]
        kept = lab != IGNORE
        assert (ids[kept] == lab[kept]).all() and bool(mask[kept].all())
        answer_ids = lab[kept].tolist()
        assert answer_ids[-1] == tok.eos_token_id and tok.eos_token_id not in answer_ids[:-1]
        # the labelled span is the answer itself: decoding it gives a synthetic answer the gold scorer rates 1.0
        assert task.judge(insts[row], tok.decode(answer_ids[:-1])).perfect


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("policy") / "constraints"
    assert run_cli(["sim", "policy", "constraints", "--out", out] + TINY) == 0
    return out


def test_folder_is_a_model_with_its_task_record(policy_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finealign.models import load_model

    rec = json.loads((policy_dir / "sim_policy.json").read_text())
    assert rec["task"] == "constraints" and rec["status"] == "done" and rec["task_options"]["required"] == 2
    assert rec["config"]["error_rate"] == 0.3 and rec["params"] > 0
    g = rec["gold"]
    assert g["samples"] == g["prompts"] * g["k"] and -10 < g["mean"] <= g["best_of_k"] <= 1.0
    assert 0.0 <= g["perfect"] <= 1.0
    assert not (policy_dir / ".work").exists()  # checkpoints are removed once the folder is complete
    tok = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    assert model.config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert sum(p.numel() for p in model.parameters()) == rec["params"]
    m, t = load_model(str(policy_dir), device="cpu")
    assert t.chat_template and t.padding_side == "left"


def test_rerun_is_a_no_op_and_other_settings_are_refused(policy_dir):
    before = (policy_dir / "sim_policy.json").read_bytes()
    weights = (policy_dir / "model.safetensors").read_bytes()
    assert run_cli(["sim", "policy", "constraints", "--out", policy_dir] + TINY) == 0
    from finealign.sim.policy import SimPolicyConfig
    from finealign.train.sim_policy import train_task_policy

    with pytest.raises(FinealignError, match=r"other settings \(error_rate: 0.3 there, 0.5 now\)"):
        train_task_policy(SimPolicyConfig(task="constraints", size="tiny", error_rate=0.5, out=str(policy_dir)))
    assert (policy_dir / "sim_policy.json").read_bytes() == before
    assert (policy_dir / "model.safetensors").read_bytes() == weights


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    from finealign.sim.policy import SimPolicyConfig
    from finealign.train.sim_policy import train_task_policy

    def cfg(out):
        return SimPolicyConfig(task="arithmetic", size="tiny", steps=6, save_every=2, out=str(out))

    class Killed(Exception):
        pass

    def kill_at_5(done, total, info):
        if done == 5:
            raise Killed()

    with pytest.raises(Killed):
        train_task_policy(cfg(tmp_path / "a"), on_progress=kill_at_5)
    rec = json.loads((tmp_path / "a" / "sim_policy.json").read_text())
    assert rec["status"] == "training" and not (tmp_path / "a" / "config.json").exists()
    seen = []
    train_task_policy(cfg(tmp_path / "a"), on_progress=lambda d, t, i: seen.append(d))
    assert seen[0] == 5  # resumed after the checkpoint of step 4
    train_task_policy(cfg(tmp_path / "b"))
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    ra, rb = (json.loads((tmp_path / x / "sim_policy.json").read_text()) for x in "ab")
    assert ra["gold"] == rb["gold"] and ra["sft_loss"] == rb["sft_loss"] and ra["fingerprint"] == rb["fingerprint"]


def test_bad_input_one_line_nothing_written(tmp_path, capsys):
    for args in (["sim", "policy", "poems", "--out", tmp_path / "x"] + TINY,
                 ["sim", "policy", "facts", "--error-rate", "1.5", "--out", tmp_path / "x"] + TINY,
                 ["sim", "policy", "facts", "--eval-prompts", "500", "--out", tmp_path / "x"] + TINY):
        capsys.readouterr()
        assert run_cli(args) != 0
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1, err
        assert not (tmp_path / "x").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert run_cli(["sim", "policy", "facts", "--out", tmp_path / "busy"] + TINY) == 1
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def test_sim_make_and_ppo_take_the_folder_and_refuse_another_task(policy_dir, tmp_path, capsys):
    make = ["sim", "make", "--n", "4", "--heldout", "0", "--k", "2", "--max-new-tokens", "8", "--model", policy_dir,
            "--device", "cpu", "-q"]
    capsys.readouterr()
    assert run_cli(make[:2] + ["facts"] + make[2:] + ["--out", tmp_path / "f"]) == 1
    err = capsys.readouterr().err
    assert "made for task 'constraints', not for task 'facts'" in err and not (tmp_path / "f").exists()
    assert run_cli(make[:2] + ["constraints"] + make[2:] + ["--out", tmp_path / "c"]) == 0
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["task"] == "constraints" and summary["train"]["samples"] == 8
    ppo = ["train", "ppo", "--model", policy_dir, "--steps", "1", "--batch-size", "2", "--minibatch-size", "2",
           "--micro-batch-size", "1", "--max-new-tokens", "6", "--device", "cpu", "--mixed-precision", "no", "-q"]
    assert run_cli(ppo + ["--reward", "sim:facts", "--prompts", tmp_path / "c" / "prompts.jsonl",
                          "--out", tmp_path / "p_bad"]) == 1
    assert "made for sim task 'constraints', but the reward is sim:facts" in capsys.readouterr().err
    assert not (tmp_path / "p_bad").exists()
    assert run_cli(ppo + ["--reward", "sim:constraints", "--prompts", tmp_path / "c" / "prompts.jsonl",
                          "--out", tmp_path / "p"]) == 0
    assert (tmp_path / "p" / "policy").is_dir()
    from finealign.errors import FinealignError as _FE
    from finealign.train.ppo import train_ppo
    from finealign.train.ppo_config import PPOConfig

    with pytest.raises(_FE, match="made for sim task 'constraints', but the reward is sim:facts"):  # the Python API too
        train_ppo(PPOConfig(model=str(policy_dir), reward="sim:facts", prompts=str(tmp_path / "c" / "prompts.jsonl"),
                            out=str(tmp_path / "p_api"), device="cpu"))


def _roofline():
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("sim_policy_roofline", REPO / "benchmarks" / "sim_policy_roofline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_roofline_flop_counts_by_hand():
    from transformers import LlamaConfig, LlamaForCausalLM

    rf = _roofline()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    # q, k, v, o: 8 x 8 = 64 each; gate, up, down: 8 x 16 = 128 each -> 4 * 64 + 3 * 128 = 640; head 8 x 10 = 80
    assert rf.linear_macs(model) == (640, 80)
    # 2 rows of 3 prompt + 2 response tokens: per row 2 * 640 * 5 + 2 * 80 * 2 (head on the response)
    # + attention 4 * 1 layer * 8 * (5 * 6 / 2) = 6400 + 320 + 480 = 7200
    assert rf.forward_flops(model, 2, 3, 2) == 2 * 7200
    # generating 2 tokens after 3: prefill 2 * 640 * 3 + 2 * 80 + 4 * 8 * (3 * 4 / 2) = 3840 + 160 + 192 = 4192,
    # then one step at context 4: 2 * 640 + 2 * 80 + 4 * 8 * 4 = 1280 + 160 + 128 = 1568
    assert rf.sample_flops(model, 1, 3, 2) == 4192 + 1568


@pytest.mark.slow  # the default size: a few minutes on one CPU thread
def test_default_size_starts_below_the_ceiling_with_room_for_sampling(tmp_path):
    from finealign.sim.policy import SimPolicyConfig
    from finealign.train.sim_policy import train_task_policy

    rec = train_task_policy(SimPolicyConfig(task="facts", out=str(tmp_path / "facts")))
    g = rec["gold"]
    assert 1e6 < rec["params"] < 1e7
    assert g["mean"] < g["best_of_k"] < 1.0 and g["perfect"] < 0.9
