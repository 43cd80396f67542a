"""``--engine ray`` on a local Ray instance (loopback, 2 workers, 1 thread each, the tiny model).

Few tests, because Ray's start-up is slow on 2 cores: (1) a killed driver, then a rerun that resumes
from the finished shards; (2) score and label outputs byte-identical to one process, with a worker
killed mid-run; (3) a worker raising on one record: the record is named, the other shards finish,
the run exits 1 and resumes after the fix.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from test_shards import _responses

pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parent
FLR = "flr:tiny-random,device=cpu"


def _kill_session(pid: int) -> None:
    """SIGKILL every process of the session led by ``pid`` (the CLI driver and its Ray processes)."""
    for d in glob.glob("/proc/[0-9]*"):
        try:
            if os.getsid(int(d[6:])) == pid:
                os.kill(int(d[6:]), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (loopback) for the tests below; its workers register the test scorers."""
    from finealign.engine.ray_engine import require_ray

    ray = require_ray(local=True)
    path = os.pathsep.join([str(TESTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": "fault_scorer.register",
                          "env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())  # loopback only
    yield ray
    ray.shutdown()


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import logging, ray
from finealign.engine.ray_engine import require_ray
from finealign.engine.sharded import score_file_sharded
from finealign.engine.shards import EngineArgs
require_ray(local=True).init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
    log_to_driver=False, runtime_env={{"worker_process_setup_hook": "fault_scorer.register",
                                      "env_vars": {{"PYTHONPATH": {tests!r}}}}})
score_file_sharded("slow:", sys.argv[1], sys.argv[2], chunk=1, engine=EngineArgs(engine="ray", workers=2, shard_size=2))
"""


def test_killed_driver_rerun_resumes_from_finished_shards(tmp_path, request):
    import fault_scorer

    from finealign.engine.sharded import score_file_sharded
    from finealign.engine.shards import EngineArgs
    from finealign.rewards.score_file import score_file

    fault_scorer.register()
    src = _responses(tmp_path / "resp.jsonl", n_prompts=8)  # 24 responses, shards of 2: 12 shards of >= 0.8 s
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER.format(tests=str(TESTS)), str(src), str(out)],
                                  env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None and not list(tmp_path.glob("out.jsonl.shards/shard-*")):
            time.sleep(0.05)
        _kill_session(driver.pid)  # the driver and the Ray instance it started
        driver.wait()
    finished = list(tmp_path.glob("out.jsonl.shards/shard-*"))
    assert driver.returncode == -signal.SIGKILL and 1 <= len(finished) < 12, (tmp_path / "driver.log").read_text()
    assert not out.exists()
    request.getfixturevalue("local_ray")  # started only now: one Ray instance at a time
    computed = []
    score_file_sharded("slow:", src, out, chunk=1, engine=EngineArgs(engine="ray", workers=2, shard_size=2),
                       on_event=lambda k, i: computed.append(i["shard"]) if k == "shard" else None)
    assert len(computed) == 12 - len(finished) and len(set(computed)) == len(computed)  # finished shards reused
    score_file("slow:", src, tmp_path / "one.jsonl", chunk=1)
    assert out.read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def test_two_workers_equal_one_process_with_a_worker_killed(tmp_path, local_ray):
    from finealign.engine.sharded import label_file_sharded, score_file_sharded
    from finealign.engine.shards import EngineArgs
    from finealign.rewards.score_file import score_file
    from finealign.train.labeling import LabelConfig, label_file

    src = _responses(tmp_path / "resp.jsonl")  # 15 responses
    engine = EngineArgs(engine="ray", workers=2, shard_size=2)
    events, killed = [], []

    def on_event(kind, info):
        events.append((kind, info))
        if kind == "shard" and not killed:  # kill the other worker, busy with its own shard
            other = [p for p in events[0][1]["pids"] if p != info["pid"]]
            os.kill(other[0], signal.SIGKILL)
            killed.append(other[0])

    score_file_sharded(FLR, src, tmp_path / "ray.jsonl", chunk=2, engine=engine, on_event=on_event)
    done = [i["shard"] for k, i in events if k == "shard"]
    assert killed and events[0][0] == "workers" and len(events[0][1]["pids"]) == 2
    assert sorted(done) == list(range(8))  # every shard once: nothing lost, nothing duplicated
    score_file(FLR, src, tmp_path / "one.jsonl", chunk=2)
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()

    cfg = LabelConfig(format="kto", batch_size=2)
    label_file_sharded(FLR, src, tmp_path / "ray-kto.jsonl", cfg, engine=engine)
    label_file(FLR, src, tmp_path / "one-kto.jsonl", cfg)
    assert (tmp_path / "ray-kto.jsonl").read_bytes() == (tmp_path / "one-kto.jsonl").read_bytes()
    rows = [json.loads(x) for x in (tmp_path / "ray-kto.jsonl").read_text().splitlines()]
    assert rows and {r["label"] for r in rows} == {True, False}


def test_worker_raising_on_one_record_names_it_and_rerun_resumes(tmp_path, local_ray, capsys):
    import fault_scorer

    fault_scorer.register()  # the driver's PrecomputedScorer never calls it; registered for the spec check
    src = _responses(tmp_path / "resp.jsonl", marker_at=11)
    out = tmp_path / "out.jsonl"
    args = ["score", src, out, "--scorer", "fault:", "--chunk", "1", "--engine", "ray", "--workers", "2",
            "--shard-size", "3", "--quiet"]
    assert run_cli(args) == 1
    err = capsys.readouterr().err
    assert "1 of 5 shards failed" in err and f"{src}:11: completion: ValueError: cannot score" in err
    assert not out.exists() and len(list(tmp_path.glob("out.jsonl.shards/shard-*"))) == 4
    _responses(src)  # the fix
    assert run_cli(args) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["score"] for r in rows] == [float(len(r["completion"])) for r in rows] and len(rows) == 15
    assert not (tmp_path / "out.jsonl.shards").exists()


RAY_RECIPE = """\
name: ray-stages
stages:
  - name: gen
    type: generate
    model: tiny-random
    prompts: {prompts}
    k: 2
    max_new_tokens: 4
    device: cpu
{engine1}  - name: scored
    type: score
    input: ${{stages.gen.out}}
    scorer: {flr}
    chunk: 2
{engine2}  - name: kto
    type: label
    input: ${{stages.gen.out}}
    scorer: {flr}
    format: kto
    batch_size: 2
{engine2}"""


def test_pipeline_stages_on_ray_equal_one_process_and_keep_their_fingerprint(tmp_path, local_ray):
    """``engine: ray`` in a recipe's generate / score / label stages: the same bytes as ``engine: local``, and
    the engine is not part of a stage's fingerprint (switching engine skips the finished stages)."""
    from finealign.pipeline.recipe import load_recipe
    from finealign.pipeline.runner import run_recipe

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Name a colour, {i}."}) + "\n" for i in range(4)))
    on_ray = {f"engine{n}": f"    engine: ray\n    workers: 2\n    shard_size: {n}\n" for n in (1, 2)}
    path, local = tmp_path / "ray.yaml", tmp_path / "local.yaml"
    path.write_text(RAY_RECIPE.format(prompts=prompts, flr=FLR, **on_ray))
    local.write_text(RAY_RECIPE.format(prompts=prompts, flr=FLR, engine1="", engine2=""))
    logs: list[str] = []
    ray_run = run_recipe(load_recipe(path), tmp_path / "ray", log=logs.append)
    assert [o.status for o in ray_run] == ["ran", "ran", "ran"]
    local_run = run_recipe(load_recipe(local), tmp_path / "local", log=logs.append)
    assert [o.status for o in local_run] == ["ran", "ran", "ran"]
    for stage, name in (("gen", "responses.jsonl"), ("scored", "scored.jsonl"), ("kto", "labels.jsonl")):
        a, b = (tmp_path / "ray" / stage / name).read_bytes(), (tmp_path / "local" / stage / name).read_bytes()
        assert a and a == b, stage
    assert len((tmp_path / "ray" / "gen" / "responses.jsonl").read_text().splitlines()) == 8  # 4 prompts x k=2
    assert not list((tmp_path / "ray").rglob("*.shards"))  # the shard stores are merged and removed
    again = run_recipe(load_recipe(local), tmp_path / "ray", log=logs.append)
    assert [o.status for o in again] == ["skipped", "skipped", "skipped"]
