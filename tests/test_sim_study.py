"""The sim study (``python -m finealign.pipeline.sim_study``, ``benchmarks/sim_study.py``) --quick on the tiny model (CI smoke test):
every stage runs, resumes, reports; the CLI and the benchmark script run it; bad input fails before any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finealign.errors import FinealignError

REPO = Path(__file__).resolve().parents[1]
FLAGS = ["--quick", "--model", "tiny-random", "--n", "10", "--heldout", "4", "--k", "2", "--max-new-tokens", "8",
         "--sizes", "4", "8", "--rm-steps", "2", "--rm-batch", "2", "--ppo-steps", "2", "--ppo-batch", "2",
         "--eval-limit", "10", "--mixed-precision", "no"]


def _study():
    from finealign.studies import sim_study

    return sim_study


def test_quick_study_on_tiny(tmp_path):
    study = _study()
    out = tmp_path / "q"
    res = study.main(FLAGS + ["--out", str(out), "--png-prefix", str(tmp_path / "plot"), "--json", str(tmp_path / "s.json")])
    rows = res["reward_models"]
    # every source (span_bt, seq_bt, token_cls, dpo) at every size, each measured against the gold edits
    assert {(r["source"], r["size"]) for r in rows} == {(s, n) for s in study.PRESET_SOURCES for n in (4, 8)}
    assert all(0.0 <= r["edit_acc"] <= 1.0 for r in rows)
    # PPO: gold and span_bt rewards x token / sequence, each with a gold curve of 2 steps
    curves = res["ppo_curves"]
    assert {(c["reward"], c["granularity"]) for c in curves} == {(r, g) for r in ("gold", "span_bt")
                                                                 for g in ("token", "sequence")}
    assert all([o["step"] for o in c["curve"]] == [1, 2] for c in curves)
    facts = res["ppo"]["facts"]
    assert set(facts["by_run"]) == {"gold/token", "gold/sequence", "span_bt/token", "span_bt/sequence"}
    # the initial and every final policy are scored by the gold reward: --quick takes 1 sample of each of the
    # 10 train and 4 held-out prompts
    for ev in [facts["initial_policy_gold"]] + [c["final_eval"] for c in curves]:
        assert (ev["train"]["samples"], ev["heldout"]["samples"]) == (10, 4)
        assert all(-10 < ev[sp]["gold"] <= 1.0 and 0 <= ev[sp]["perfect"] <= 1 for sp in ("train", "heldout"))
    assert (tmp_path / "plot_rm.png").stat().st_size > 0 and (tmp_path / "plot_ppo.png").stat().st_size > 0
    assert json.loads((tmp_path / "s.json").read_text())["ppo"] == json.loads(json.dumps(res["ppo"]))
    # resume: a rerun trains nothing and reports the same numbers
    again = study.main(FLAGS + ["--out", str(out)])
    assert again["reward_models"] == rows
    assert json.loads(json.dumps(again["ppo"])) == json.loads(json.dumps(res["ppo"]))
    # a rerun keeps the wall time of every earlier invocation (its own is not the study's)
    assert [x["total"] for x in json.loads((out / "study.json").read_text())["earlier_invocations"]] == [
        res["seconds"]["total"]]
    # mean-pooled token RMs: evaluated apart, nothing retrained, the sum pool's cache untouched; the pool changes
    # only the response's score, so each RM's token AUROC is the same under both, and DPO's rows are the same rows
    before = {p: p.read_bytes() for p in (out / "rm").rglob("sim_eval.json")}
    weights = sorted(p.stat().st_mtime_ns for p in (out / "rm").rglob("*.safetensors"))
    means = study.main(FLAGS + ["--out", str(out), "--rm-pool", "mean", "--stages", "data", "rm"])["reward_models"]
    assert {(r["source"], r["pool"]) for r in means} == {("span_bt", "mean"), ("seq_bt", "mean"),
                                                         ("token_cls", "mean"), ("dpo", None)}
    for d in (out / "rm").glob("*/*/*/*_n*"):  # rm/TASK/NOISE/sSEED/SOURCE_nSIZE
        s = json.loads((d / "sim_eval.json").read_text())
        if d.name.startswith("dpo"):
            assert not (d / "sim_eval_pool-mean.json").exists()
            continue
        r = json.loads((d / "sim_eval_pool-mean.json").read_text())
        assert r["pool"] == "mean" and s["pool"] == "sum" and r["spec"] == s["spec"] + ",pool=mean"
        assert r["token_auroc"] == s["token_auroc"] and r["n_pairs"] == s["n_pairs"]
    assert len(list((out / "rm").rglob("sim_eval_pool-mean.json"))) == 6  # 3 token RM losses x 2 sizes
    assert {p: p.read_bytes() for p in (out / "rm").rglob("sim_eval.json")} == before
    assert sorted(p.stat().st_mtime_ns for p in (out / "rm").rglob("*.safetensors")) == weights
    # an evaluation cached by an older study (without a metric of today's) is measured again, not retrained
    cached = next((out / "rm").rglob("span_bt_n4/sim_eval.json"))
    stale = json.loads(cached.read_text())
    stale.pop("pair_acc_length_balanced")
    cached.write_text(json.dumps(stale))
    weights = sorted(p.stat().st_mtime_ns for p in cached.parent.rglob("*.safetensors"))
    assert weights
    study.main(FLAGS + ["--out", str(out)])
    assert "pair_acc_length_balanced" in json.loads(cached.read_text())
    assert sorted(p.stat().st_mtime_ns for p in cached.parent.rglob("*.safetensors")) == weights
    # a finished PPO run made with other settings is refused, not reported under the new ones
    from finealign.errors import FinealignError

    with pytest.raises(FinealignError, match="another configuration .*learning_rate"):
        study.main(FLAGS + ["--out", str(out), "--lr", "1e-3"])
    # so is a finished reward model (token RM or DPO) trained with other settings
    with pytest.raises(FinealignError, match="span_bt reward model trained with another configuration .*learning_rate"):
        study.main(FLAGS + ["--out", str(out), "--rm-lr", "1e-3"])
    with pytest.raises(FinealignError, match="dpo reward model trained with another configuration .*beta"):
        study.main(FLAGS + ["--out", str(out), "--dpo-beta", "0.5"])
    # a group that does not divide the rollout batch fails before any work
    with pytest.raises(FinealignError, match="group: 3 must divide ppo_batch 2"):
        study.main(FLAGS + ["--out", str(tmp_path / "g"), "--group", "3"])
    assert not (tmp_path / "g").exists()


def test_sizes_larger_than_pool_are_refused(tmp_path):
    study = _study()
    from finealign.errors import FinealignError

    with pytest.raises(FinealignError, match="asked for 500 annotated pairs, but the pool"):
        study.nested_subset(list(range(30)), 500, 0, "facts (noise zero)")
    sub = study.nested_subset(list(range(30)), 10, 0, "x")
    assert set(study.nested_subset(list(range(30)), 5, 0, "x")) <= set(sub)  # nested


def test_summarize_ppo_hand_worked():
    study = _study()

    def run(rew, gran, golds, proxy):
        return {"task": "facts", "reward": rew, "granularity": gran, "seed": 0,
                "curve": [{"step": i + 1, "gold": g, "proxy": p, "kl": 0.1} for i, (g, p) in enumerate(zip(golds, proxy))]}

    runs = [run("gold", "token", [0, .2, .4, .6, .8, .8], [0] * 6), run("gold", "sequence", [0, 0, .1, .2, .4, .6], [0] * 6),
            run("span_bt", "token", [0, .3, .2, .1, 0, -.1], [0, 1, 2, 3, 4, 5])]
    second = run("gold", "token", [0, .2, .4, .6, .8, .8], [0] * 6) | {"seed": 1}
    runs[0]["final_eval"] = {"train": {"gold": 0.5}, "heldout": {"gold": 0.1}}
    second["final_eval"] = {"train": {"gold": 0.3}, "heldout": {"gold": 0.2}}
    s = study.summarize_ppo(runs + [second], 0.5, {"facts": {"train": {"gold": 0.0}}})["facts"]
    # final policies' gold over the 2 gold/token seeds: train (.5+.3)/2 = .4, range [.3, .5]; held out .15
    assert s["by_run"]["gold/token"]["final_policy_gold"]["train"] == {"mean": pytest.approx(0.4), "range": [0.3, 0.5]}
    assert s["by_run"]["gold/token"]["final_policy_gold"]["heldout"]["mean"] == pytest.approx(0.15)
    assert s["by_run"]["gold/sequence"]["final_policy_gold"]["train"] is None  # not evaluated
    assert s["initial_policy_gold"] == {"train": {"gold": 0.0}}
    # initial = mean of step-1 gold = 0; gold finals (last 3 steps): token (.6+.8+.8)/3 = .7333, sequence
    # (.2+.4+.6)/3 = .4; target = 0 + 0.5 * .7333 = .3667. 3-step moving averages: token 0 .1 .2 .4 -> step 4;
    # sequence 0 0 .033 .1 .233 .4 -> step 6; speed-up 6 / 4 = 1.5.
    assert s["target"] == pytest.approx(0.36667, abs=1e-4)
    assert s["by_run"]["gold/token"]["mean_steps_to_target"] == 4
    assert s["by_run"]["gold/sequence"]["mean_steps_to_target"] == 6
    assert s["speedup_token_over_sequence"]["gold"]["ratio"] == pytest.approx(1.5)
    # span_bt: proxy 0,1 -> 4,5 rises while gold (0+.3)/2 = .15 -> (0-.1)/2 = -.05 falls: over-optimised
    assert s["by_run"]["span_bt/token"]["over_optimised"] == 1
    assert s["by_run"]["span_bt/token"]["reached"] == "0 of 1"
    # step 1 is the initial policy: a lucky first batch (.9 >= target .3667) does not count; then the 3-step
    # means are (.9 - .9) / 2 = 0, 0, 0, ... below the target
    lucky = run("span_bt", "sequence", [.9, -.9, 0, 0, 0, 0], [0] * 6)
    assert study.summarize_ppo(runs + [lucky], 0.5)["facts"]["by_run"]["span_bt/sequence"]["reached"] == "0 of 1"
    # a run that touches the target by noise and ends below it has not reached it: 3-step means 0, .175, .3667-,
    # .4 (step 4 touches: (.35+.75+.1)/3 = .4 >= .3667), ending (.1+0+0)/3 = .033 < .3667: lost; no speed-up
    noisy = run("gold", "sequence", [0, .35, .75, .1, 0, 0], [0] * 6)
    t = study.summarize_ppo([runs[0], noisy], 0.5)["facts"]
    assert t["by_run"]["gold/sequence"]["runs"][0]["lost"] and t["by_run"]["gold/sequence"]["mean_steps_to_target"] is None
    assert t["by_run"]["gold/sequence"]["reached"] == "0 of 1 (1 touched it, ended below)"
    assert "gold" not in t["speedup_token_over_sequence"]
    # nor when one seed of two reached it: the mean over the seeds that did would drop the slowest
    both = study.summarize_ppo([runs[0], runs[1], noisy | {"seed": 1}], 0.5)["facts"]
    assert both["by_run"]["gold/sequence"]["reached"] == "1 of 2 (1 touched it, ended below)"
    assert both["speedup_token_over_sequence"] == {"note": "not every token and sequence run reached the target"}


def test_presets(tmp_path):
    study = _study()
    out = ["--out", str(tmp_path / "o")]
    default, full, quick = (study.parse_args(out + flag) for flag in ([], ["--full"], ["--quick"]))
    # --full is the whole grid; the default is a subset of it (what fits 2 hours on 2 CPU cores)
    assert (full.tasks, full.sizes, full.seeds, full.noise) == (
        ["facts", "constraints", "arithmetic"], [25, 50, 100, 200, 400], [0, 1, 2], ["zero", "realistic"])
    assert set(default.tasks) <= set(full.tasks) and set(default.sizes) <= set(full.sizes)
    assert set(default.ppo_rewards) <= set(full.ppo_rewards) and default.seeds == full.seeds
    # an explicit flag beats the preset; token RMs train LoRA adapters on every layer, but in the smoke test
    assert study.parse_args(out + ["--full", "--sizes", "25"]).sizes == [25]
    assert (default.rm_lora, default.top_layers, full.rm_lora) == (True, 0, True)
    assert (quick.rm_lora, quick.top_layers) == (False, 2)
    assert not study.parse_args(out + ["--no-rm-lora"]).rm_lora
    assert study.parse_args(out + ["--quick", "--rm-lora"]).rm_lora
    with pytest.raises(SystemExit):  # one preset at a time
        study.parse_args(out + ["--quick", "--full"])


def test_the_default_autocast_is_bf16_only_where_it_is_faster(tmp_path, monkeypatch):
    """The 135M presets' autocast is ``auto``, resolved once for the whole study (and recorded as resolved):
    bf16 on an AMX-BF16 CPU, float32 (``no``) on a CPU without it, where bf16 made a token-RM step 20x slower
    (docs/sim.md); an explicit value is kept."""
    import finealign.config as config

    study, out = _study(), ["--out", str(tmp_path / "o")]
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(config, "cpu_flags", lambda path="/proc/cpuinfo": {"avx2", "amx_bf16"})
    assert study.parse_args(out).mixed_precision == "bf16"
    monkeypatch.setattr(config, "cpu_flags", lambda path="/proc/cpuinfo": {"avx2", "avx512f"})
    assert study.parse_args(out).mixed_precision == "no"
    assert study.parse_args(out + ["--mixed-precision", "bf16"]).mixed_precision == "bf16"
    assert study.parse_args(out + ["--fast"]).mixed_precision == "no"


@pytest.mark.parametrize("entry", ["module", "script", "cli"])
def test_study_entry_points(tmp_path, entry):
    """``python -m finealign.pipeline.sim_study``, ``python benchmarks/sim_study.py`` and ``finealign sim study`` run the
    same program: one size and one source end to end (exit 0, study.json with its row); bad input exits non-zero
    with one line and writes nothing."""
    cmd = {"module": [sys.executable, "-m", "finealign.pipeline.sim_study"],
           "script": [sys.executable, str(REPO / "benchmarks" / "sim_study.py")],
           "cli": [sys.executable, "-m", "finealign.cli.main", "sim", "study"]}[entry]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "o"
    r = subprocess.run(cmd + FLAGS + ["--out", str(out), "--stages", "data", "rm", "--sizes", "4", "--sources", "seq_bt"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads((out / "study.json").read_text())["reward_models"]
    assert [(x["source"], x["size"], x["seeds"]) for x in rows] == [("seq_bt", 4, 1)]
    for bad, why in ((["--tasks", "nosuch"], "tasks: 'nosuch' is not one of facts, constraints, arithmetic"),
                     (["--task-options", "facts:slots=zero"], "slots"),
                     (["--task-options", "slots=2"], "task_options: slots=2: expected TASK:K=V"),
                     (["--task-options", "constraints:required=3"], "constraints is not one of tasks (facts)"),
                     (["--sizes", "4", "999"], "asked for 999 annotated pairs")):
        o = tmp_path / f"bad{len(why)}"
        r = subprocess.run(cmd + FLAGS + ["--out", str(o), "--stages", "data", "rm", "--sources", "seq_bt"] + bad,
                           capture_output=True, text=True, env=env)
        assert r.returncode != 0 and why in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        if bad[0] != "--sizes":
            assert not o.exists()
        else:  # checked against the pool the data stage made, before any reward model is trained
            assert (o / "data").exists() and not (o / "rm").exists()
    assert "--rm-pool" in subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=env).stdout


def test_fast_preset_on_tiny_task_policies(tmp_path):
    """--fast on `sim policy --size tiny` models: each task gets its own policy (built under OUT/policies), the
    reward models train on that policy's backbone, PPO runs 2 processes; every run reports its phase times."""
    study = _study()
    flags = ["--fast", "--policy-size", "tiny", "--tasks", "constraints", "arithmetic", "--n", "8", "--heldout",
             "4", "--k", "2", "--max-new-tokens", "6", "--sizes", "3", "--sources", "seq_bt", "--rm-steps", "1",
             "--rm-batch", "2", "--ppo-steps", "2", "--ppo-batch", "4", "--group", "2", "--ppo-seeds", "0", "1",
             "--ppo-rewards", "gold", "seq_bt", "--eval-k", "1", "--eval-limit", "8"]
    a = study.parse_args(flags + ["--out", str(tmp_path / "f")])
    assert (a.advantage, a.ppo_lora, a.mixed_precision, a.jobs, a.learned_seeds) == ("prime", False, "no", 2, [0])
    assert a.policies == tmp_path / "f" / "policies"
    res = study.main(flags + ["--out", str(tmp_path / "f")], echo=False)
    for task in ("constraints", "arithmetic"):
        rec = json.loads((tmp_path / "f" / "policies" / task / "sim_policy.json").read_text())
        assert rec["task"] == task and rec["status"] == "done"
        assert json.loads((tmp_path / "f" / "data" / task / "summary.json").read_text())["policy"] == str(
            tmp_path / "f" / "policies" / task)
    rm = json.loads((tmp_path / "f" / "rm" / "arithmetic" / "zero" / "s0" / "seq_bt_n3" / "train_config.json")
                    .read_text())
    assert rm["model"] == str(tmp_path / "f" / "policies" / "arithmetic")
    # gold: 2 tasks x 2 granularities x 2 seeds; the learned reward: --learned-seeds (0) only
    keys = sorted((c["task"], c["reward"], c["granularity"], c["seed"]) for c in res["ppo_curves"])
    assert keys == sorted([(t, "gold", g, s) for t in ("constraints", "arithmetic") for g in ("token", "sequence")
                           for s in (0, 1)] + [(t, "seq_bt", g, 0) for t in ("constraints", "arithmetic")
                                               for g in ("token", "sequence")])
    for c in res["ppo_curves"]:
        sec = c["seconds"]
        assert sec["total"] >= sec["update"] >= 0 and set(sec) == {"generate", "reward", "ref_value", "update", "total"}
    for task, s in res["ppo"].items():
        for key, g in s["by_run"].items():
            assert g["final_length"] is not None and g["final_length"] >= 0
            assert (g["final_gold_ci"] is None) == (len(g["runs"]) < 2)


def test_steps_ratio_censored_and_interval():
    from finealign.studies.sim_summary import steps_ratio

    def rows(steps, length=60):
        return [{"steps_to_target": x, "steps": length} for x in steps]

    # every run reached it: sequence mean (8 + 12) / 2 = 10 over token mean (4 + 6) / 2 = 5 -> 2.0; the resampled
    # means lie within [8, 12] / [4, 6], so the interval lies within [8/6, 12/4] = [1.33, 3.0]
    r = steps_ratio(rows([4, 6]), rows([8, 12]))
    assert r["ratio"] == pytest.approx(2.0) and r["censored"] == [] and r["seeds"] == [2, 2]
    assert 8 / 6 - 1e-9 <= r["ci"][0] <= 2.0 <= r["ci"][1] <= 3.0 + 1e-9
    # a token run that never reached it in 60 steps counts as 61: 10 / ((4 + 61) / 2) = 0.3077, token side censored
    c = steps_ratio(rows([4, None]), rows([8, 12]))
    assert c["ratio"] == pytest.approx(10 / 32.5) and c["censored"] == ["token"]
    # sequence never reached it (both 61) while token did: a lower bound 61 / 5 = 12.2
    assert steps_ratio(rows([4, 6]), rows([None, None]))["ratio"] == pytest.approx(12.2)
    assert steps_ratio(rows([None]), rows([None])) is None  # nobody reached it: no ratio
    assert steps_ratio(rows([4]), rows([8]))["ci"] is None  # one seed a side: no interval


def test_ratio_of_means_ci_hand_worked():
    from finealign.core.stats import ratio_of_means_ci

    # 6 / ((4 + 2) / 2) = 2.0; numerator resamples all have mean 6, denominator means are 4, 3 or 2 -> [1.5, 3.0]
    ratio, lo, hi = ratio_of_means_ci([6, 6], [4, 2])
    assert ratio == pytest.approx(2.0) and 1.5 <= lo <= hi <= 3.0
    assert ratio_of_means_ci([2, 2, 2], [1, 1, 1]) == (2.0, 2.0, 2.0)  # no spread: a point interval
    r, lo, hi = ratio_of_means_ci([6], [3])
    assert r == 2.0 and lo != lo and hi != hi  # one value a side: NaN interval
    with pytest.raises(ValueError):
        ratio_of_means_ci([1.0], [0.0])
    with pytest.raises(ValueError):
        ratio_of_means_ci([], [1.0])


def test_fast_refuses_a_policy_made_for_another_task(tmp_path):
    """--policies DIR whose DIR/constraints holds a policy made for arithmetic: one error naming both tasks,
    before the study writes anything."""
    from finealign.errors import FinealignError

    study = _study()
    fake = tmp_path / "pol" / "constraints"
    fake.mkdir(parents=True)
    (fake / "sim_policy.json").write_text(json.dumps({"task": "arithmetic", "status": "done"}))
    (fake / "config.json").write_text("{}")
    with pytest.raises(FinealignError, match="made for task 'arithmetic', not for task 'constraints'"):
        study.main(["--fast", "--tasks", "constraints", "--policies", str(tmp_path / "pol"),
                    "--out", str(tmp_path / "o")], echo=False)
    assert not (tmp_path / "o").exists()


def test_target_depends_on_the_gold_runs_only():
    study = _study()

    def run(rew, gran, seed, golds):
        return {"task": "facts", "reward": rew, "granularity": gran, "seed": seed,
                "curve": [{"step": i + 1, "gold": g, "proxy": 0.0, "kl": 0.1} for i, g in enumerate(golds)]}

    gold = [run("gold", g, 0, [0, .2, .4, .6, .6, .6]) for g in ("token", "sequence")]
    gold += [run("gold", g, 1, [.2, .2, .4, .6, .6, .6]) for g in ("token", "sequence")]
    # initial gold: seed 0's step 1 is 0, seed 1's .2 -> (0 + .2) / 2 = .1; both granularities end at .6;
    # target = .1 + 0.5 * (.6 - .1) = .35
    alone = study.summarize_ppo(gold, 0.5)["facts"]
    assert alone["initial_gold"] == pytest.approx(0.1) and alone["target"] == pytest.approx(0.35)
    # four learned-reward runs on seed 0 whose step-1 batch scored -.6 leave the target where it was (the
    # mean over all runs' step 1 would give (0 + 0 + .2 + .2 - 2.4) / 8 = -.25 and target .175)
    learned = [run(rw, g, 0, [-.6, -.6, -.6, -.6, -.6, -.6]) for rw in ("span_bt", "dpo") for g in ("token", "sequence")]
    mixed = study.summarize_ppo(gold + learned, 0.5)["facts"]
    assert mixed["target"] == pytest.approx(0.35)
    assert mixed["by_run"]["gold/token"]["runs"] == alone["by_run"]["gold/token"]["runs"]


def test_a_ppo_step_larger_than_the_prompt_pool_is_refused_before_any_work(tmp_path):
    study = _study()
    from finealign.errors import FinealignError

    # settings that cannot run together are refused by the settings themselves (command, recipe plan, program)
    from finealign.studies.sim_study_config import SimStudyConfig

    for bad, why in (({"learned_tasks": ["arithmetic"]}, "learned_tasks: arithmetic not among tasks"),
                     ({"task_options": ["facts:slot=1"], "tasks": ["facts"]}, "unknown option 'slot'"),
                     ({"tasks": []}, "tasks: give at least one value"),
                     ({"quick": True, "full": True}, "quick and full are both presets")):
        with pytest.raises(FinealignError, match=why):
            SimStudyConfig(out=str(tmp_path / "x"), **bad)
    # 8 rollouts in groups of 2 draw 8 / 2 = 4 prompts a step; --n 3 holds 3
    with pytest.raises(FinealignError, match="n: 3 training prompts are fewer than one PPO step draws"):
        study.main(FLAGS + ["--out", str(tmp_path / "n"), "--n", "3", "--ppo-batch", "8", "--group", "2"])
    assert not (tmp_path / "n").exists()
    assert study.parse_args(FLAGS + ["--out", str(tmp_path / "m"), "--n", "4", "--ppo-batch", "8", "--group", "2"]).n == 4


def test_reward_kind_benchmark_scores_the_same_token_classifier_both_ways(tmp_path):
    """benchmarks/token_rm_reward_kind.py on a tiny study: every token_cls RM scored as raw logits and as
    log P(fine); the token AUROC is the same both ways (log sigmoid is monotone), the JSON names both."""
    study = _study()
    out = tmp_path / "s"
    study.main(FLAGS + ["--out", str(out), "--stages", "data", "rm", "--sizes", "4", "--sources", "token_cls"], echo=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "token_rm_reward_kind.py"), str(out), "--json",
                        str(tmp_path / "k.json")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads((tmp_path / "k.json").read_text())
    kinds = {k.rsplit("/", 1)[1] for k in got}
    assert kinds == {"logit", "log_sigmoid"}
    for key, row in got.items():
        if key.endswith("/logit") and row["token_auroc"] is not None:
            assert got[key[:-len("logit")] + "log_sigmoid"]["token_auroc"] == pytest.approx(row["token_auroc"])
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "token_rm_reward_kind.py"), str(tmp_path / "none")],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "no rm/TASK/NOISE/sS/token_cls_nN folders" in r.stderr


def test_a_recipe_stage_runs_the_same_study_as_the_command(tmp_path):
    """``type: sim-study`` (the verb table's row) takes the command's settings as keys and writes the same
    study.json rows into its stage folder; its summary names the study file."""
    from finealign.pipeline.recipe import load_recipe
    from finealign.pipeline.runner import plan, run_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: s\nstages:\n  - name: study\n    type: sim-study\n    quick: true\n    model: tiny-random\n"
                      "    n: 10\n    heldout: 4\n    k: 2\n    max_new_tokens: 8\n    sizes: [4]\n    rm_steps: 2\n"
                      "    rm_batch: 2\n    eval_limit: 10\n    mixed_precision: 'no'\n    stages: [data, rm]\n"
                      "    sources: [seq_bt]\n", encoding="utf-8")
    (outcome,) = run_recipe(load_recipe(str(recipe)), tmp_path / "run")
    study = json.loads((tmp_path / "run" / "study" / "study.json").read_text())
    assert [(x["source"], x["size"], x["seeds"]) for x in study["reward_models"]] == [("seq_bt", 4, 1)]
    assert outcome.summary["study"] == str(tmp_path / "run" / "study" / "study.json")
    recipe.write_text(recipe.read_text().replace("[seq_bt]", "[nosuch]"), encoding="utf-8")
    with pytest.raises(FinealignError, match="r.yaml:17: study.sources: 'nosuch' is not one of"):  # the command's check
        plan(load_recipe(str(recipe)), tmp_path / "run2")


def test_list_flags_take_their_values_up_to_the_next_flag():
    import typer

    from finealign.cli.main import app
    from finealign.cli.vocabulary import expand_list_flags

    root = typer.main.get_command(app)
    args = ["sim", "study", "--out", "o", "--tasks", "facts", "arithmetic", "--n", "4", "--seeds", "0", "1", "2", "-q"]
    # the other args keep their order; each list follows them as the repeated option click parses
    assert expand_list_flags(args, root) == ["sim", "study", "--out", "o", "--n", "4", "-q", "--tasks", "facts",
                                             "--tasks", "arithmetic", "--seeds", "0", "--seeds", "1", "--seeds", "2"]
    # given twice, the last one wins (as the argparse program reads it)
    assert expand_list_flags(["sim", "study", "--sizes", "4", "8", "--n", "2", "--sizes", "4"], root) == [
        "sim", "study", "--n", "2", "--sizes", "4"]
    # a command without list options, and a group, are left as they are
    assert expand_list_flags(["generate", "--k", "2"], root) == ["generate", "--k", "2"]
    assert expand_list_flags(["sim"], root) == ["sim"]
    # the study's settings from the command line equal the argparse program's
    from finealign.studies.sim_study_config import parse_study_args

    cfg = parse_study_args(["--out", "o", "--tasks", "facts", "arithmetic", "--seeds", "0", "1", "2", "--fast"])
    assert (cfg.tasks, cfg.seeds, cfg.fast) == (["facts", "arithmetic"], [0, 1, 2], True)


@pytest.mark.parametrize("preset", ["quick", "fast", "full", "default"])
def test_a_presets_help_text_is_the_flags_it_sets(tmp_path, preset):
    """The flags each preset's help lists (``preset_text``), given by hand, give the preset's settings."""
    from finealign.studies.sim_study_config import PRESETS, preset_text

    study, out = _study(), ["--out", str(tmp_path / "o")]
    by_flag = study.parse_args(out + preset_text(PRESETS[preset]).split())
    by_preset = study.parse_args(out + ([] if preset == "default" else [f"--{preset}"]))
    assert {k: getattr(by_flag, k) for k in PRESETS[preset] if k != "policies"} == {
        k: getattr(by_preset, k) for k in PRESETS[preset] if k != "policies"}
