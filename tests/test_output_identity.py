"""One output identity (``data.identity``, ``docs/output-identity.md``): the marks on the settings' fields,
content fingerprints of inputs and models, and the stale results they prevent in ``finealign run`` and
``eval winrate``; an output folder made by another verb is refused, naming it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from finealign.data.identity import (check_verb, differences, fingerprint_path, non_identity_fields, reads_fields,
                                     resumable_fields)
from finealign.rewards.inputs import fingerprint_input
from finealign.errors import FinealignError
from finealign.pipeline.recipe import load_recipe
from finealign.pipeline.runner import run_recipe

PROMPTS = [{"id": "p1", "prompt": "What is the capital of France?"}, {"id": "p2", "prompt": "Write a short poem."}]


def _write_prompts(path: Path, rows=PROMPTS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _log():
    lines: list[str] = []
    return lines, lines.append


def _tiny_model_dir(dst: Path) -> Path:
    from finealign.models.loading import resolve_spec

    shutil.copytree(resolve_spec("tiny-random"), dst)
    return dst


def _new_weights(folder: Path) -> None:
    """Write other weights into a model folder (same names, same sizes)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    model.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------- the marks


def _verb_configs():
    from finealign.cli.edit import EditConfig
    from finealign.cli.generate import GenerateConfig
    from finealign.cli.score import ScoreConfig
    from finealign.eval.rm_eval import EvalConfig
    from finealign.eval.winrate_config import WinrateConfig
    from finealign.sim.make import SimMakeConfig
    from finealign.sim.policy import SimPolicyConfig
    from finealign.train.followup_sft import FollowupSFTConfig
    from finealign.train.ppo_config import PPOConfig
    from finealign.train.preference import PrefTrainConfig
    from finealign.train.token_rm_config import TokenRMConfig

    return [EditConfig, GenerateConfig, ScoreConfig, EvalConfig, WinrateConfig,
            SimMakeConfig, SimPolicyConfig, FollowupSFTConfig, PPOConfig, PrefTrainConfig, TokenRMConfig]


@pytest.mark.parametrize("cls", _verb_configs(), ids=lambda c: c.__name__)
def test_where_an_output_goes_or_runs_is_never_its_identity(cls):
    names = {f.name for f in dataclasses.fields(cls)}
    for name in ("out", "overwrite", "device", "engine", "workers", "report_to", "save_every"):
        if name in names:  # a field redefined in a subclass keeps its mark
            assert name in non_identity_fields(cls), f"{cls.__name__}.{name}"
    # every verb that reads a model or a data file says so on the field
    assert reads_fields(cls), cls.__name__


def test_marks_replace_the_hand_kept_lists():
    from finealign.train.ppo_config import PPOConfig
    from finealign.train.token_rm_config import TokenRMConfig

    # PPO: growing steps resumes (the CLI's old RESUMABLE_CHANGES), the learning rate does not
    assert {"steps", "save_every", "out", "device"} <= resumable_fields(PPOConfig)
    assert "learning_rate" not in resumable_fields(PPOConfig) and "steps" not in non_identity_fields(PPOConfig)
    # token RM: steps set the schedule (not resumable); logging and evaluation cadence are
    assert {"eval_every", "log_every", "stop_after", "out"} <= resumable_fields(TokenRMConfig)
    assert "steps" not in resumable_fields(TokenRMConfig)


def test_a_resume_manifest_is_derived_from_the_marks():
    from finealign.config import Settings, setting
    from finealign.data.identity import keyed_fields, resume_identity

    @dataclasses.dataclass(kw_only=True)
    class Toy(Settings):
        """Toy settings."""

        a: int = setting(1, help="an identity field")
        b: str = setting(None, reads="file", keyed=True, help="a keyed input: more records append")
        c: int = setting(2, identity=False, help="changes nothing the output holds")
        d: int = setting(3, identity="grows", help="a larger value extends the output")

    assert keyed_fields(Toy) == {"b"}
    # only a: b is keyed, c changes nothing, d may grow under a resume
    assert resume_identity(Toy, {"a": 5}) == {"a": 5}
    with pytest.raises(KeyError, match=r"lack \['a'\]"):
        resume_identity(Toy, {})  # an identity field the library forgot to record
    with pytest.raises(KeyError, match=r"not identity fields: \['c'\]"):
        resume_identity(Toy, {"a": 5, "c": 2})  # a hand-added entry that is not an identity field


def _manifest_keys(out: Path) -> set:
    return set(json.loads(Path(f"{out}.manifest.json").read_text())["settings"])


def test_generate_score_and_edit_manifests_hold_their_rows_identity_fields(tmp_path):
    """Each verb's manifest, written by its library function through the verb table, has one entry per
    identity field of the row's settings that is not keyed: a new identity field is recorded without
    anyone listing it, and a keyed input (the prompts, the records to score or edit) is not."""
    from finealign.data.identity import keyed_fields, role
    from finealign.verbs import run_verb, verbs

    def expected(name: str) -> set:
        cls = verbs()[name].settings
        return {f.name for f in dataclasses.fields(cls) if role(f) is True} - keyed_fields(cls)

    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    rows = verbs()
    gen = rows["generate"].settings(model="tiny-random", prompts=str(prompts), out=str(tmp_path / "gen.jsonl"), k=2,
                                    max_new_tokens=3, device="cpu")
    run_verb("generate", gen)
    score = rows["score"].settings(input=str(tmp_path / "gen.jsonl"), out=str(tmp_path / "scored.jsonl"),
                                   scorer="length", max_chars=40)
    run_verb("score", score)
    edit = rows["edit"].settings(input=str(tmp_path / "gen.jsonl"), out=str(tmp_path / "edits.jsonl"),
                                 editor="local:tiny-random", max_new_tokens=4, limit=1, device="cpu")
    run_verb("edit", edit)
    for name, out in (("generate", gen.out), ("score", score.out), ("edit", edit.out)):
        keys = _manifest_keys(out)
        assert keys == expected(name), name
    assert {"model", "temperature", "backend"} <= _manifest_keys(gen.out) and "prompts" not in _manifest_keys(gen.out)
    assert {"scorer", "max_chars"} <= _manifest_keys(score.out) and "input" not in _manifest_keys(score.out)
    assert {"editor", "template", "max_ratio"} <= _manifest_keys(edit.out) and "limit" not in _manifest_keys(edit.out)
    # a keyed setting changed: the resume appends (k 2 -> 3 adds a sample per prompt), nothing refused
    run_verb("generate", dataclasses.replace(gen, k=3))
    assert len((tmp_path / "gen.jsonl").read_text().splitlines()) == 3 * len(PROMPTS)
    # an identity field changed: refused, named
    with pytest.raises(FinealignError, match="temperature"):
        run_verb("generate", dataclasses.replace(gen, temperature=0.3))


def test_fingerprints_follow_content_not_names(tmp_path):
    f = _write_prompts(tmp_path / "p.jsonl")
    a = fingerprint_path(f)
    _write_prompts(f, PROMPTS[:1])
    b = fingerprint_path(f)
    assert a["digest"] != b["digest"]
    diff = differences({"prompts": {"source": str(f), **a}}, {"prompts": {"source": str(f), **b}})
    assert len(diff) == 1 and diff[0].startswith("prompts:") and a["digest"] in diff[0] and b["digest"] in diff[0]
    # a built-in model by its pinned name when asked not to fetch it; a folder by its files
    assert fingerprint_input("model", "smollm2-135m-instruct", pull=False)["builtin"]
    model = _tiny_model_dir(tmp_path / "m")
    before = fingerprint_input("model", str(model))["digest"]
    _new_weights(model)
    assert fingerprint_input("model", str(model))["digest"] != before


def test_big_files_are_stamped_by_size_mtime_and_inode(tmp_path, monkeypatch):
    import finealign.data.identity as ident

    monkeypatch.setattr(ident, "HASH_LIMIT", 4)
    f = tmp_path / "w.bin"
    f.write_bytes(b"0123456789")
    a = fingerprint_path(f)["digest"]
    g = tmp_path / "w2.bin"
    g.write_bytes(b"0123456789")
    shutil.copystat(f, g)
    g.replace(f)  # same size, same mtime, another inode (a file replaced by rename)
    assert fingerprint_path(f)["digest"] != a


# ---------------------------------------------------------------------------------------------- recipes


GEN = """\
name: ident
stages:
  - name: gen
    type: generate
    model: MODEL
    prompts: PROMPTS
    k: 1
    max_new_tokens: 2
"""


def _gen_recipe(tmp_path: Path, prompts: Path, model: str = "tiny-random") -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(GEN.replace("PROMPTS", str(prompts)).replace("MODEL", model))
    return p


def test_input_beside_the_run_folder_is_hashed(tmp_path):
    # `--out exp` and an input named exp-prompts.jsonl: a string-prefix test took it for a file inside the run
    prompts = _write_prompts(tmp_path / "exp-prompts.jsonl")
    recipe, run = _gen_recipe(tmp_path, prompts), tmp_path / "exp"
    lines, log = _log()
    assert [o.status for o in run_recipe(load_recipe(recipe), run, log=log)] == ["ran"]
    assert [o.status for o in run_recipe(load_recipe(recipe), run, log=log)] == ["skipped"]
    _write_prompts(prompts, PROMPTS + [{"id": "p3", "prompt": "Name a colour."}])  # edited in place
    lines.clear()
    assert [o.status for o in run_recipe(load_recipe(recipe), run, log=log)] == ["ran"]
    said = " ".join(lines)
    assert "input prompts" in said and "exp-prompts.jsonl" in said, lines
    rows = [json.loads(x) for x in (run / "gen" / "responses.jsonl").read_text().splitlines()]
    assert {r["prompt_id"] for r in rows} == {"p1", "p2", "p3"}


def test_new_weights_in_a_model_folder_rerun_the_stage(tmp_path):
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    model = _tiny_model_dir(tmp_path / "policy")
    recipe, run = _gen_recipe(tmp_path, prompts, str(model)), tmp_path / "run"
    lines, log = _log()
    assert [o.status for o in run_recipe(load_recipe(recipe), run, log=log)] == ["ran"]
    assert [o.status for o in run_recipe(load_recipe(recipe), run, log=log)] == ["skipped"]
    _new_weights(model)
    lines.clear()
    assert [o.status for o in run_recipe(load_recipe(recipe), run, log=log)] == ["ran"]
    assert any("input model" in m and "rerunning from scratch" in m for m in lines), lines


PPO = """\
name: grow
vars:
  steps: 2
stages:
  - name: ppo
    type: train-ppo
    policy: tiny-random
    reward: length
    granularity: sequence
    prompts: PROMPTS
    steps: ${vars.steps}
    batch_size: 2
    minibatch_size: 2
    micro_batch_size: 2
    ppo_epochs: 1
    max_new_tokens: 3
    save_every: 1
    log_samples_every: 1
    device: cpu
    mixed_precision: "no"
"""


def test_growing_steps_extends_a_trainer_in_a_recipe(tmp_path):
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    recipe = tmp_path / "ppo.yaml"
    recipe.write_text(PPO.replace("PROMPTS", str(prompts)))
    run = tmp_path / "run"
    lines, log = _log()
    assert [o.status for o in run_recipe(load_recipe(recipe), run, log=log)] == ["ran"]
    metrics = run / "ppo" / "metrics.jsonl"
    first = metrics.read_text().splitlines()
    lines.clear()
    out = run_recipe(load_recipe(recipe, var_overrides={"steps": "3"}), run, log=log)
    assert [(o.status, o.summary.get("steps")) for o in out] == [("ran", 3)]
    assert any("resuming from step 2" in m or "from step 2" in m for m in lines), lines  # not retrained
    assert not any("rerunning from scratch" in m for m in lines)
    now = metrics.read_text().splitlines()
    assert now[: len(first)] == first and len(now) > len(first)
    # the same steps again: done; fewer steps: a different output, retrained from scratch
    assert [o.status for o in run_recipe(load_recipe(recipe, var_overrides={"steps": "3"}), run, log=log)] == ["skipped"]
    lines.clear()
    run_recipe(load_recipe(recipe), run, log=log)
    assert any("steps: 3 -> 2" in m and "rerunning from scratch" in m for m in lines), lines


# ---------------------------------------------------------------------------------------------- another verb


def test_a_folder_made_by_another_verb_is_refused_naming_it(tmp_path):
    out = tmp_path / "o"
    check_verb(out, "train token-rm")
    check_verb(out, "train token-rm")  # the same verb resumes
    with pytest.raises(FinealignError, match="made by `finealign train token-rm`, not `finealign train ppo`"):
        check_verb(out, "train ppo")


# ---------------------------------------------------------------------------------------------- eval winrate


def test_winrate_refuses_stale_answers_after_prompts_or_weights_change(tmp_path):
    from finealign.errors import ConfigError
    from finealign.eval.winrate import WinrateConfig, run_winrate

    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    model = _tiny_model_dir(tmp_path / "policy")
    cfg = dict(out=tmp_path / "wr", model=str(model), reference="tiny-random", prompts=prompts, judge="length",
               judge_check="none", max_new_tokens=3, n_boot=20, device="cpu")
    run_winrate(WinrateConfig(**cfg))
    run_winrate(WinrateConfig(**cfg))  # nothing changed: resumes
    # the prompts file edited in place (same ids): the cached answers answer other prompts
    _write_prompts(prompts, [{"id": "p1", "prompt": "Name a colour."}, PROMPTS[1]])
    with pytest.raises(ConfigError, match=r"prompts: was .*prompts.jsonl \(fingerprint \w+\), now"):
        run_winrate(WinrateConfig(**cfg))
    res = run_winrate(WinrateConfig(**cfg, overwrite=True))
    answers = [json.loads(x) for x in (tmp_path / "wr" / "outputs.jsonl").read_text().splitlines()]
    assert res.n == 2 and {a["prompt"] if isinstance(a["prompt"], str) else a["prompt"][0]["content"]
                           for a in answers} >= {"Name a colour."}
    # new weights written at the same path
    _new_weights(model)
    with pytest.raises(ConfigError, match=r"model: was .*policy \(fingerprint \w+\), now"):
        run_winrate(WinrateConfig(**cfg))


def test_winrate_folder_of_another_verb_is_refused(tmp_path):
    from finealign.eval.winrate import WinrateConfig, run_winrate

    out = tmp_path / "o"
    check_verb(out, "train ppo")
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    with pytest.raises(FinealignError, match="made by `finealign train ppo`, not `finealign eval winrate`"):
        run_winrate(WinrateConfig(out=out, model="tiny-random", reference="tiny-random", prompts=prompts,
                                  judge="length", judge_check="none"))


def test_ppo_resume_with_changed_prompts_is_refused_naming_them(tmp_path):
    from finealign.train.ppo import check_settings, train_ppo
    from finealign.train.ppo_config import PPOConfig

    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    cfg = PPOConfig(policy="tiny-random", reward="length", granularity="sequence", prompts=str(prompts),
                    out=str(tmp_path / "ppo"), steps=1, batch_size=2, minibatch_size=2, micro_batch_size=2,
                    ppo_epochs=1, max_new_tokens=3, device="cpu", mixed_precision="no")
    train_ppo(cfg)
    check_settings(dataclasses.replace(cfg, steps=2))  # growing steps resumes
    _write_prompts(prompts, list(reversed(PROMPTS)))  # same prompts, other order: other batches
    with pytest.raises(FinealignError, match=r"input changed since this run started \(prompts: was .*prompts.jsonl"):
        check_settings(dataclasses.replace(cfg, steps=2))
    with pytest.raises(FinealignError, match="input changed"):
        train_ppo(dataclasses.replace(cfg, steps=2))


def test_a_folder_holding_only_its_manifest_is_claimed_afresh_by_a_corrected_run(tmp_path):
    # a run that failed after recording its inputs but before writing anything has nothing to resume: a rerun
    # with other inputs claims it; once the folder holds work, other inputs are refused
    out = tmp_path / "o"
    check_verb(out, "train token-rm", inputs={"model": {"spec": "tiny-randon"}})
    check_verb(out, "train token-rm", inputs={"model": {"spec": "tiny-random"}})
    assert json.loads((out / "finealign_manifest.json").read_text())["inputs"] == {"model": {"spec": "tiny-random"}}
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FinealignError, match="model: was tiny-random, now tiny-randon"):
        check_verb(out, "train token-rm", inputs={"model": {"spec": "tiny-randon"}})


def test_a_keyed_resume_over_a_changed_record_is_refused_not_left_stale(tmp_path):
    """Keyed inputs append what is new; a record that changed under its key would otherwise leave stale rows
    behind (found by a new-user trial): generate refuses a prompt whose text changed under the same id, score
    refuses an output holding records that are no longer in its input. Both name it and leave the output as
    it was."""
    from finealign.verbs import run_verb, verbs

    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    gen = verbs()["generate"].settings(model="tiny-random", prompts=str(prompts), out=str(tmp_path / "gen.jsonl"),
                                       k=1, max_new_tokens=3, device="cpu")
    run_verb("generate", gen)
    before = (tmp_path / "gen.jsonl").read_bytes()
    _write_prompts(prompts, [PROMPTS[0], {"id": "p2", "prompt": "Write a long poem."}])  # p2's text changed
    with pytest.raises(FinealignError, match=r"1 prompt text\(s\) changed.*'p2'"):
        run_verb("generate", gen)
    assert (tmp_path / "gen.jsonl").read_bytes() == before
    _write_prompts(prompts, PROMPTS + [{"id": "p3", "prompt": "Say hi."}])  # a new id appends
    assert run_verb("generate", gen).responses_written == 1

    score = verbs()["score"].settings(input=str(tmp_path / "gen.jsonl"), out=str(tmp_path / "scored.jsonl"),
                                      scorer="length")
    run_verb("score", score)
    scored = (tmp_path / "scored.jsonl").read_bytes()
    rows = [json.loads(x) for x in (tmp_path / "gen.jsonl").read_text().splitlines()]
    rows[0]["completion"] += " changed"
    changed = tmp_path / "gen2.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(FinealignError, match=r"holds 1 scored record\(s\) that are not in"):
        run_verb("score", dataclasses.replace(score, input=str(changed)))
    assert (tmp_path / "scored.jsonl").read_bytes() == scored


def test_an_edit_resume_over_a_changed_input_record_is_refused(tmp_path):
    from finealign.verbs import run_verb, verbs

    rows = [{"id": f"r{i}", "prompt": p["prompt"], "completion": f"An answer {i}."} for i, p in enumerate(PROMPTS)]
    src = tmp_path / "responses.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    edit = verbs()["edit"].settings(input=str(src), out=str(tmp_path / "edits.jsonl"), editor="local:tiny-random",
                                    max_new_tokens=4, limit=1, device="cpu")
    run_verb("edit", edit)
    before = (tmp_path / "edits.jsonl").read_bytes()
    rows[0]["completion"] = "Another answer."  # r0 was edited from the old text
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(FinealignError, match=r"1 input record\(s\) changed.*'r0'"):
        run_verb("edit", dataclasses.replace(edit, limit=2))
    assert (tmp_path / "edits.jsonl").read_bytes() == before
