"""Resumable outputs and caches are tied to what made them (``data.manifest``): every resumable verb
refuses to resume under other settings, naming the setting; ``--overwrite`` starts afresh; every
scored record says which scorer scored it (issue 12, fault 1)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from finealign.data.manifest import fingerprint_path, manifest_path, prepare_output
from finealign.models.fingerprint import model_fingerprint
from finealign.errors import FinealignError
from conftest import run_cli


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the mechanism

def test_fingerprint_follows_content_not_location(tmp_path, monkeypatch):
    a = tmp_path / "a"
    a.mkdir()
    (a / "w.bin").write_bytes(b"\x00" * 100)
    (a / "config.json").write_text("{}")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    assert fingerprint_path(a) == fingerprint_path(b)  # a copy is the same model
    (b / "w.bin").write_bytes(b"\x01" + b"\x00" * 99)  # same size, other bytes
    assert fingerprint_path(a)["digest"] != fingerprint_path(b)["digest"]
    # files over the hash limit are stamped by size, modification time and inode (data.identity)
    import finealign.data.identity as m

    monkeypatch.setattr(m, "HASH_LIMIT", 10)
    before = fingerprint_path(a)["digest"]
    import os

    st = (a / "w.bin").stat()
    os.utime(a / "w.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint_path(a)["digest"] != before
    assert fingerprint_path(tmp_path / "nope") == {"missing": str(tmp_path / "nope")}


def test_prepare_output_refuses_other_settings_and_names_them(tmp_path):
    out = tmp_path / "o.jsonl"
    prepare_output(out, "generate", {"temperature": 0.7, "seed": 0})
    assert json.loads(manifest_path(out).read_text())["settings"] == {"temperature": 0.7, "seed": 0}
    out.write_text('{"id": 1}\n')
    prepare_output(out, "generate", {"temperature": 0.7, "seed": 0})  # same settings: resumes
    with pytest.raises(FinealignError, match=r"temperature: made with 0.7, this run has 1.0") as e:
        prepare_output(out, "generate", {"temperature": 1.0, "seed": 0})
    assert "seed" not in str(e.value) and "--overwrite" in str(e.value)
    with pytest.raises(FinealignError, match="made by `finealign generate`, not `score`"):
        prepare_output(out, "score", {"temperature": 0.7, "seed": 0})
    prepare_output(out, "generate", {"temperature": 1.0, "seed": 0}, overwrite=True)
    assert not out.exists()
    # an output with content but no record of what made it is refused
    legacy = _write(tmp_path / "legacy.jsonl", [{"id": 1}])
    with pytest.raises(FinealignError, match="no record of the settings"):
        prepare_output(legacy, "generate", {"seed": 0})


def test_merged_cache_manifest(tmp_path):
    cache = tmp_path / "scores.jsonl"
    prepare_output(cache, "score-cache", {"a": {"digest": "1"}}, merge=True)
    cache.write_text('{"scorer": "a"}\n')
    prepare_output(cache, "score-cache", {"b": {"digest": "2"}}, merge=True)  # a new scorer joins
    assert set(json.loads(manifest_path(cache).read_text())["settings"]) == {"a", "b"}
    with pytest.raises(FinealignError, match="a: made with"):
        prepare_output(cache, "score-cache", {"a": {"digest": "3"}}, merge=True)


def test_model_fingerprint_of_specs_and_models(tiny, tmp_path):
    model, tok = tiny
    fp = model_fingerprint("tiny-random")
    assert fp["spec"] == "tiny-random" and fp["files"] >= 3
    d = tmp_path / "copy"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    assert model_fingerprint(str(d))["digest"] == model_fingerprint(str(d))["digest"]
    assert "digest" in model_fingerprint(model)  # a loaded model: its folder


# ------------------------------------------------------------------ every resumable verb

def _prompts(tmp_path):
    return _write(tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"Question {i}?"} for i in range(2)])


def test_generate_refuses_other_model_or_sampling_settings(tiny, tmp_path, capsys):
    p = _prompts(tmp_path)
    out = tmp_path / "g.jsonl"
    base = ["generate", "--model", "tiny-random", "--prompts", p, "--out", out, "-k", "2", "--max-new-tokens", "3",
            "--temperature", "0.7", "--seed", "0", "--device", "cpu", "-q"]
    assert run_cli(base) == 0
    n = len(out.read_text().splitlines())
    assert n == 4
    for flag, value, name in [("--temperature", "1.0", "temperature"), ("--seed", "1", "seed"),
                              ("--max-new-tokens", "4", "max_new_tokens"), ("--top-p", "0.5", "top_p")]:
        args = list(base)
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
        assert run_cli(args) == 1
        err = capsys.readouterr().err
        assert f"{name}: made with" in err and "--overwrite" in err
        assert len(out.read_text().splitlines()) == n  # nothing appended
    # another model behind the output: a copy of the tiny model with other weights
    d = tmp_path / "other"
    m2, tok = tiny
    m2.save_pretrained(d)
    tok.save_pretrained(d)
    from safetensors.torch import load_file, save_file

    w = load_file(str(d / "model.safetensors"))
    w = {k: v + 0.01 for k, v in w.items()}
    save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})
    other = [a if a != "tiny-random" else str(d) for a in base]
    assert run_cli(other) == 1
    assert "model: made with" in capsys.readouterr().err
    assert run_cli(other + ["--overwrite"]) == 0  # afresh: 4 samples of the other model only
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and {r["meta"]["model"] for r in rows} == {str(d)}
    # more samples of the same settings extend the file
    assert run_cli(other[:other.index("-k") + 1] + ["3"] + other[other.index("-k") + 2:]) == 0
    assert len(out.read_text().splitlines()) == 6


def _save_token_rm(path, seed):
    from finealign.models.token_rm import new_token_rm

    model, tok = new_token_rm("tiny-random", mode="full", top_layers=1, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    if path.exists():
        shutil.rmtree(path)
    model.save(path, tok)


def test_score_records_its_scorer_and_refuses_another(tmp_path, capsys):
    inp = _write(tmp_path / "r.jsonl", [{"prompt": "q", "completion": "a long answer"}, {"prompt": "q", "completion": "no"}])
    out = tmp_path / "s.jsonl"
    assert run_cli(["score", "--scorer", "length", inp, out, "-q"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["scorer"] for r in rows] == ["length", "length"] and rows[0]["score"] == 13.0
    assert run_cli(["score", "--scorer", "direct:tiny-random,device=cpu", inp, out, "-q"]) == 1
    err = capsys.readouterr().err
    assert "scorer (spec): made with" in err and "length" in err
    assert [json.loads(x)["score"] for x in out.read_text().splitlines()] == [13.0, 2.0]  # untouched
    # a token RM retrained at the same path is another scorer
    rm = tmp_path / "rm"
    _save_token_rm(rm, seed=0)
    out2 = tmp_path / "s2.jsonl"
    spec = f"token-rm:{rm},device=cpu"
    assert run_cli(["score", "--scorer", spec, inp, out2, "-q"]) == 0
    _save_token_rm(rm, seed=1)
    (out2.parent / "s2.jsonl").write_text(out2.read_text().splitlines()[0] + "\n")  # a half-done run
    assert run_cli(["score", "--scorer", spec, inp, out2, "-q"]) == 1
    assert "scorer (token_rm): made with" in capsys.readouterr().err
    assert run_cli(["score", "--scorer", spec, inp, out2, "-q", "--overwrite"]) == 0
    assert len(out2.read_text().splitlines()) == 2


def test_eval_rm_cache_refuses_a_retrained_token_rm(tmp_path, capsys):
    bench = _write(tmp_path / "b.jsonl", [{"prompt": "q", "chosen": "good answer", "rejected": "bad"},
                                          {"prompt": "r", "chosen": "yes", "rejected": "no thanks"}])
    rm = tmp_path / "rm"
    _save_token_rm(rm, seed=0)
    spec = f"token-rm:{rm},device=cpu"
    out = tmp_path / "ev"
    args = ["eval-rm", "--scorer", spec, "--benchmark", bench, "--out", out, "--n-boot", "10", "-q"]
    assert run_cli(args) == 0
    first = json.loads((out / "results.json").read_text())["metrics"]["scorer"]["overall"]["mean_margin"]
    assert run_cli(["eval-rm", "--scorer", "length", "--benchmark", bench, "--out", out, "--n-boot", "10", "-q"]) == 0
    _save_token_rm(rm, seed=1)  # retrained at the same path
    assert run_cli(args) == 1
    err = capsys.readouterr().err
    assert f"{spec} (token_rm): made with" in err and "--overwrite" in err
    assert run_cli(args + ["--overwrite"]) == 0
    again = json.loads((out / "results.json").read_text())["metrics"]["scorer"]["overall"]["mean_margin"]
    assert again != first  # the new model's scores, not the cached ones


def test_label_cache_refuses_a_changed_model(tiny, tmp_path, capsys):
    d = tmp_path / "m"
    tiny[0].save_pretrained(d)
    tiny[1].save_pretrained(d)
    gen = _write(tmp_path / "gen.jsonl", [{"prompt": "q", "prompt_id": "1", "sample": s, "completion": c}
                                          for s, c in enumerate(["a b", "c d e", "f"])])
    dst = tmp_path / "pairs.jsonl"
    args = ["label", "--scorer", f"direct:{d},device=cpu", gen, dst, "-q"]
    assert run_cli(args) == 0
    (d / "config.json").write_text((d / "config.json").read_text().replace("}", ', "note": 1}', 1))
    assert run_cli(args) == 1
    assert "made with" in capsys.readouterr().err
    assert run_cli(args + ["--overwrite"]) == 0


def test_edit_refuses_another_editor_setting(tiny, tmp_path):
    from finealign.edits.editors import LocalEditor
    from finealign.edits.minimality import MinimalityConfig
    from finealign.edits.run import EditJobConfig, run_edits

    inp = _write(tmp_path / "pairs.jsonl", [{"id": str(i), "prompt": "q", "chosen": "a", "rejected": f"bad answer {i}"}
                                            for i in range(2)])
    out = tmp_path / "e.jsonl"
    ed = LocalEditor(tiny, max_new_tokens=4)
    run_edits(ed, inp, out, EditJobConfig(limit=1))
    with pytest.raises(FinealignError, match="max_ratio: made with 0.5, this run has 0.3"):
        run_edits(ed, inp, out, EditJobConfig(MinimalityConfig(max_ratio=0.3)))
    with pytest.raises(FinealignError, match="max_new_tokens: made with 4, this run has 5"):
        run_edits(LocalEditor(tiny, max_new_tokens=5), inp, out)
    st = run_edits(ed, inp, out)  # the same settings resume: one more edit
    assert st.done_before == 1
    st = run_edits(LocalEditor(tiny, max_new_tokens=5), inp, out, EditJobConfig(overwrite=True))
    assert st.done_before == 0


def test_trainer_output_refuses_other_settings(tmp_path):
    from finealign.train.preference import PrefTrainConfig
    from finealign.train.trl_common import tie_output

    data = _write(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    out = tmp_path / "dpo"
    cfg = PrefTrainConfig(model="tiny-random", data=data, out=out, beta=0.1)
    tie_output(cfg, "dpo")
    (out / "checkpoint-2").mkdir()  # a run that saved a checkpoint, then was killed
    tie_output(cfg, "dpo")  # the same run resumes
    with pytest.raises(FinealignError, match="beta: made with 0.1, this run has 0.5"):
        tie_output(PrefTrainConfig(model="tiny-random", data=data, out=out, beta=0.5), "dpo")
    _write(data, [{"prompt": "q", "chosen": "a", "rejected": "c"}])  # other data behind the same path
    with pytest.raises(FinealignError, match="data: made with"):
        tie_output(cfg, "dpo")


def test_a_refusal_names_the_part_of_a_record_that_differs(tmp_path):
    """A setting whose value has parts (a scorer: spec and model) is compared part by part, so the refusal
    shows what changed instead of two long records cut to the same prefix; an unset value reads "unset"."""
    out = tmp_path / "o.jsonl"
    model = {"spec": "tiny-random", "digest": "8c23", "bytes": 230847, "files": 6}
    prepare_output(out, "score", {"scorer": {"spec": "flr:tiny-random,dims=relevance", "model": model},
                                  "max_chars": None})
    out.write_text('{"id": 1}\n')
    with pytest.raises(FinealignError) as e:
        prepare_output(out, "score", {"scorer": {"spec": "flr:tiny-random,dims=relevance,mode=pmi", "model": model},
                                      "max_chars": 20})
    msg = str(e.value)
    assert ('scorer (spec): made with "flr:tiny-random,dims=relevance", this run has '
            '"flr:tiny-random,dims=relevance,mode=pmi"') in msg
    assert "max_chars: made with unset, this run has 20" in msg
    assert "scorer (model)" not in msg  # the same model is not named as a difference
