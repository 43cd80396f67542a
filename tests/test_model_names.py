"""A mistyped model name fails fast offline, with the closest built-in and cached names suggested
(issue 17, fault 6). The hub's reachability is decided once per process, quickly."""

from __future__ import annotations

import time

import pytest

from conftest import run_cli
from finealign.errors import ModelError
from finealign.models import hub, loading


@pytest.fixture(autouse=True)
def _fresh_reachability(monkeypatch):
    """Each test decides reachability anew (the verdict is cached per endpoint for the process)."""
    monkeypatch.setattr(hub, "_HUB_VERDICTS", {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound but never listening: connecting is refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["offline-env", "unreachable-endpoint"])
def test_mistyped_builtin_fails_fast_with_suggestion(monkeypatch, how):
    if how == "offline-env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:  # no offline flag: the hub endpoint (here a closed loopback port) is probed once and found down
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    with pytest.raises(ModelError) as e:
        loading.load_model("smolm2-135m-instruct")
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"took {elapsed:.1f} s"  # the slack; before: about 50 s of retries
    msg = str(e.value)
    assert "smolm2-135m-instruct" in msg and "did you mean" in msg and "'smollm2-135m-instruct'" in msg


def test_hub_verdict_is_decided_once(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    calls = []
    real = hub._probe

    def counting(host, port, timeout):
        calls.append(host)
        return real(host, port, timeout)

    monkeypatch.setattr(hub, "_probe", counting)
    for _ in range(3):
        assert hub.hub_reachable() is False
    assert len(calls) == 1


def test_cached_hub_ids_are_suggested(tmp_path, monkeypatch):
    # a hub cache holding one model (the layout huggingface_hub writes: models--ORG--NAME)
    (tmp_path / "models--HuggingFaceTB--SmolLM2-360M-Instruct" / "snapshots").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="HuggingFaceTB/SmolLM2-360M-Instruct"):
        loading.load_model("HuggingFaceTB/SmolLM2-360M-Instruc")


def test_cli_unknown_model_is_one_line_without_retries(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    out = tmp_path / "o.jsonl"
    assert run_cli(["generate", "--model", "tiny-randon", "--prompts", prompts, "--out", out, "-q"]) == 1
    err = capsys.readouterr().err
    assert "did you mean 'tiny-random'" in err and "Retrying" not in err and "Traceback" not in err
    assert not out.exists()


# every verb that names a model checks it before its output exists: a mistyped name leaves nothing behind, so
# the corrected rerun is not refused as "a run made with another model"
_MISTYPED = {
    "generate": ["generate", "--model", "tiny-randon", "--prompts", "{p}", "--out", "{o}"],
    "train dpo": ["train", "dpo", "--model", "tiny-randon", "--data", "{pairs}", "--out", "{o}"],
    "train kto": ["train", "kto", "--model", "tiny-randon", "--data", "{pairs}", "--out", "{o}"],
    "train token-rm": ["train", "token-rm", "--model", "tiny-randon", "--data", "{pairs}", "--out", "{o}"],
    "train ppo policy": ["train", "ppo", "--model", "tiny-randon", "--prompts", "{p}", "--reward", "length",
                         "--out", "{o}"],
    "train ppo reward": ["train", "ppo", "--model", "tiny-random", "--prompts", "{p}", "--reward", "flr:tiny-randon",
                         "--out", "{o}"],
    "eval winrate model": ["eval", "winrate", "--model", "tiny-randon", "--reference", "tiny-random", "--prompts",
                           "{p}", "--judge", "length", "--out", "{o}"],
    "eval winrate reference": ["eval", "winrate", "--model", "tiny-random", "--reference", "tiny-randon",
                               "--prompts", "{p}", "--judge", "length", "--out", "{o}"],
}


@pytest.mark.parametrize("case", list(_MISTYPED))
def test_a_mistyped_model_leaves_no_output(case, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    p = tmp_path / "p.jsonl"
    p.write_text("".join(f'{{"prompt": "question {i}"}}\n' for i in range(8)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "hi", "chosen": "hello", "rejected": "go away"}\n')
    out = tmp_path / "out"
    args = [a.format(p=p, pairs=pairs, o=out) for a in _MISTYPED[case]]
    assert run_cli([*args, "-q"]) == 1
    err = capsys.readouterr().err
    assert "did you mean 'tiny-random'" in err and "Traceback" not in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["p.jsonl", "pairs.jsonl"]
