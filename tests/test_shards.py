"""Sharded runs without Ray: shard planning, the shard store, the local engine (same code path as the
Ray workers' jobs), failures named by record, resume, and the CLI's engine errors."""

from __future__ import annotations

import importlib.util
import json
import random
import socket
import sys

import pytest

from conftest import run_cli
from finealign.errors import ConfigError, FinealignError
from finealign.engine.shards import EngineArgs, ShardFailures, ShardStore, plan_shards

LOCAL = EngineArgs(engine="local", shard_size=4)


def _responses(path, n_prompts=5, k=3, marker_at=None):
    """n_prompts x k response records (line = 1-based record number); ``marker_at``: a line whose
    completion carries the fault scorer's marker."""
    from fault_scorer import MARKER

    lines = []
    for i in range(n_prompts):
        for s in range(k):
            text = f"Answer {s} to question {i}: " + "yes " * (s + 1)
            if len(lines) + 1 == marker_at:
                text += MARKER
            lines.append(json.dumps({"prompt_id": str(i), "sample": s, "prompt": f"What about {i}?",
                                     "completion": text}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plan_shards_hand_worked_and_invariants():
    # 10 units, size 3 rounded up to the batch of 2 -> 4: [0, 4), [4, 8), [8, 10)
    assert [(s.start, s.end) for s in plan_shards(10, 3, align=2)] == [(0, 4), (4, 8), (8, 10)]
    assert plan_shards(0, 5) == []
    rng = random.Random(0)
    for _ in range(200):
        n, size, align = rng.randint(1, 300), rng.choice([None, rng.randint(1, 40)]), rng.randint(1, 9)
        shards = plan_shards(n, size, align)
        assert shards[0].start == 0 and shards[-1].end == n
        assert all(a.end == b.start for a, b in zip(shards, shards[1:]))  # contiguous, no overlap
        assert all(s.start % align == 0 for s in shards)  # the verb's batches never straddle shards
        assert [s.index for s in shards] == list(range(len(shards)))


def test_store_reuses_only_shards_of_the_same_settings_and_content(tmp_path):
    shards = plan_shards(6, 3)
    units = list("abcdef")
    content = lambda s: units[s.start:s.end]  # noqa: E731
    a = ShardStore(tmp_path / "st", "settings-A", shards, content)
    a.write(shards[0], [{"v": x} for x in "abc"], {"truncated": 1})
    assert [s.index for s in a.pending()] == [1]
    with pytest.raises(FinealignError, match="2 results for 3 units"):
        a.write(shards[1], [{"v": 1}, {"v": 2}])
    assert ShardStore(tmp_path / "st", "settings-A", shards, content).is_done(0)
    assert not ShardStore(tmp_path / "st", "settings-B", shards, content).is_done(0)  # other settings
    units[4] = "X"  # other input in shard 1 only: shard 0 is still reused
    assert ShardStore(tmp_path / "st", "settings-A", shards, content).is_done(0)
    units[0] = "X"
    assert not ShardStore(tmp_path / "st", "settings-A", shards, content).is_done(0)


def test_engine_args_validation():
    with pytest.raises(ConfigError, match="needs the ray engine"):
        EngineArgs(engine="local", ray_address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match="workers"):
        EngineArgs(engine="ray", workers=0)
    with pytest.raises(ConfigError, match="engine"):
        EngineArgs(engine="spark")


def test_local_engine_outputs_are_byte_identical_to_one_process(tmp_path):
    """The jobs the Ray workers run, run here shard by shard: score, label and generate outputs equal
    the single-process ones byte for byte, and the shard folders are gone afterwards."""
    from finealign.generation import generate_file
    from finealign.engine.sharded import generate_file_sharded, label_file_sharded, score_file_sharded
    from finealign.rewards.score_file import score_file
    from finealign.train.labeling import LabelConfig, label_file

    src = _responses(tmp_path / "resp.jsonl")
    spec = "flr:tiny-random,device=cpu"
    score_file(spec, src, tmp_path / "one.jsonl", chunk=2)
    events = []
    st = score_file_sharded(spec, src, tmp_path / "sharded.jsonl", chunk=2, engine=LOCAL,
                            on_event=lambda k, i: events.append(i["shard"]) if k == "shard" else None)
    assert st["written"] == 15 and len(events) == 4  # 15 responses in shards of 4
    assert (tmp_path / "sharded.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert not (tmp_path / "sharded.jsonl.shards").exists()

    cfg = LabelConfig(batch_size=3)
    label_file("direct:tiny-random,device=cpu", src, tmp_path / "l1.jsonl", cfg)
    label_file_sharded("direct:tiny-random,device=cpu", src, tmp_path / "l2.jsonl", cfg, engine=LOCAL)
    assert (tmp_path / "l2.jsonl").read_bytes() == (tmp_path / "l1.jsonl").read_bytes()
    assert (tmp_path / "l2.jsonl.scores.jsonl").read_bytes() == (tmp_path / "l1.jsonl.scores.jsonl").read_bytes()

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about {w}."}) + "\n" for w in "abcde"))
    kw = dict(k=3, max_new_tokens=5, batch_size=6, device="cpu")
    generate_file("tiny-random", prompts, tmp_path / "g1.jsonl", **kw)
    gs = generate_file_sharded("tiny-random", prompts, tmp_path / "g2.jsonl", engine=EngineArgs(shard_size=2), **kw)
    assert gs.responses_written == 15
    assert (tmp_path / "g2.jsonl").read_bytes() == (tmp_path / "g1.jsonl").read_bytes()


def test_local_engine_eval_rm_and_max_chars_equal_one_process(tmp_path):
    """eval-rm's score cache and metrics, and score with --max-chars, through shards = one process."""
    from finealign.eval.rm_eval import EvalConfig, run_eval
    from finealign.engine.sharded import run_eval_sharded, score_file_sharded
    from finealign.rewards.score_file import score_file

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"A good answer {i}.", "rejected": "No."}) + "\n"
                             for i in range(5)))
    kw = dict(scorer="direct:tiny-random,device=cpu", benchmark=str(pairs), n_boot=20, batch_size=2)
    one = run_eval(EvalConfig(out=tmp_path / "e1", **kw))
    sharded = run_eval_sharded(EvalConfig(out=tmp_path / "e2", **kw), engine=EngineArgs(shard_size=2))
    assert (tmp_path / "e2" / "scores.jsonl").read_bytes() == (tmp_path / "e1" / "scores.jsonl").read_bytes()
    assert sharded.to_json()["metrics"] == one.to_json()["metrics"] and not (tmp_path / "e2" / "shards").exists()
    src = _responses(tmp_path / "resp.jsonl")
    score_file("direct:tiny-random,device=cpu", src, tmp_path / "c1.jsonl", chunk=3, max_chars=12)
    score_file_sharded("direct:tiny-random,device=cpu", src, tmp_path / "c2.jsonl", chunk=3, max_chars=12, engine=LOCAL)
    assert (tmp_path / "c2.jsonl").read_bytes() == (tmp_path / "c1.jsonl").read_bytes()


def test_failing_record_is_named_other_shards_finish_and_rerun_resumes(tmp_path):
    import fault_scorer

    from finealign.engine.sharded import score_file_sharded
    from finealign.rewards.score_file import score_file

    fault_scorer.register()
    src = _responses(tmp_path / "resp.jsonl", marker_at=7)  # 15 records, shards of 4: line 7 is in shard 1
    out = tmp_path / "out.jsonl"
    with pytest.raises(ShardFailures, match=r"1 of 4 shards failed, first: .*resp\.jsonl:7: completion: "
                                            r"ValueError: cannot score"):
        score_file_sharded("fault:", src, out, chunk=2, engine=LOCAL)
    assert not out.exists()  # nothing merged while a shard is missing
    assert len(list((tmp_path / "out.jsonl.shards").glob("shard-*.jsonl"))) == 3  # the others finished
    _responses(src)  # the fix
    done = []
    score_file_sharded("fault:", src, out, chunk=2, engine=LOCAL,
                       on_event=lambda k, i: done.append(i["shard"]) if k == "shard" else None)
    assert done == [1]  # only the failed shard is computed again
    score_file("fault:", src, tmp_path / "one.jsonl", chunk=2)
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def test_precomputed_scorer_answers_in_order_and_falls_back():
    from finealign.engine.sharded import PrecomputedScorer, ScoreRequest

    reqs = [ScoreRequest("p", "same", "f:1"), ScoreRequest("p", "same", "f:2"), ScoreRequest("p", "other", "f:3")]
    pre = PrecomputedScorer(reqs, [{"score": 1.0}, {"score": 2.0}, {"score": 3.0}], fallback="length")
    # repeated requests get their results in order of occurrence; the last one stays for later calls
    assert pre.score(["p", "p", "p", "p"], ["same", "same", "other", "same"]) == [1.0, 2.0, 3.0, 2.0]
    assert pre.score(["p"], ["unplanned!"]) == [10.0] and pre.computed == 1  # length scorer: 10 characters


# ------------------------------------------------------------------------------------- CLI errors


def test_cli_engine_ray_without_ray_says_what_to_install(tmp_path, monkeypatch, capsys):
    src = _responses(tmp_path / "resp.jsonl")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = run_cli(["score", src, tmp_path / "o.jsonl", "--scorer", "length", "--engine", "ray", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'finealign[ray]'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # the "loading" line and the one-line error


def test_cli_unreachable_ray_address_fails_fast_and_writes_nothing(tmp_path, capsys):
    if importlib.util.find_spec("ray") is None:  # (not imported here: see test_ray_engine's loopback note)
        pytest.skip("ray is not installed")
    src = _responses(tmp_path / "resp.jsonl")
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for verb in (["score", src, tmp_path / "o.jsonl", "--scorer", "length"],
                 ["label", src, tmp_path / "o.jsonl", "--scorer", "length"],
                 ["generate", "--model", "tiny-random", "--prompts", src, "--out", tmp_path / "o.jsonl"]):
        code = run_cli(verb + ["--engine", "ray", "--ray-address", f"127.0.0.1:{port}", "--quiet"])
        err = capsys.readouterr().err
        assert code == 1 and f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resp.jsonl"]  # nothing written


def test_cli_ray_flags_need_engine_ray(tmp_path, capsys):
    src = _responses(tmp_path / "resp.jsonl")
    code = run_cli(["score", src, tmp_path / "o.jsonl", "--scorer", "length", "--workers", "2"])
    assert code == 1 and "needs the ray engine" in capsys.readouterr().err
