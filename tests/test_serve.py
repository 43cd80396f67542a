"""The OpenAI-compatible server (a real uvicorn server on loopback, the real ``openai`` client), the
OpenAI editor against it, and a fault-injecting endpoint for retries, backoff, timeouts and resume."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from conftest import run_cli, serve_root
from finealign.edits.editors import EditorFatal, EditRequest, LocalEditor, OpenAIEditor
from finealign.edits.run import failed_path, run_edits
from finealign.edits.template import EDIT_TEMPLATE_V1


@contextmanager
def serve_in_thread(app):
    """``conftest.serve_root``, yielding the OpenAI base URL ``http://127.0.0.1:P/v1``."""
    with serve_root(app) as root:
        yield root + "/v1"


@pytest.fixture(scope="module")
def tiny_server(tiny):
    from finealign.serve.openai_server import create_app

    model, tok = tiny
    with serve_in_thread(create_app(model=model, tokenizer=tok, served_name="tiny-random")) as url:
        yield url


@pytest.fixture()
def client(tiny_server):
    c = openai.OpenAI(base_url=tiny_server, api_key="unused", max_retries=0, timeout=30)
    yield c
    c.close()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


MSGS = [{"role": "user", "content": "What is the capital of France?"}]


# ----------------------------------------------------------------------------------------- server


def test_models_and_chat_completion_usage(client, tiny):
    from finealign.generation import render_prompt

    assert [m.id for m in client.models.list().data] == ["tiny-random"]
    r = client.chat.completions.create(model="tiny-random", messages=MSGS, temperature=0, max_tokens=8)
    assert r.object == "chat.completion" and len(r.choices) == 1
    c = r.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    # prompt tokens: the chat template rendered and tokenized independently
    n_prompt = len(tiny[1](render_prompt(tiny[1], MSGS), add_special_tokens=False)["input_ids"])
    assert r.usage.prompt_tokens == n_prompt
    assert 0 <= r.usage.completion_tokens <= 8
    assert r.usage.total_tokens == n_prompt + r.usage.completion_tokens
    if c.finish_reason == "length":
        assert r.usage.completion_tokens == 8


def test_n_and_seed_reproducible(client):
    kw = dict(model="tiny-random", messages=MSGS, temperature=1.0, top_p=0.9, max_tokens=6, n=3, seed=7)
    a = [c.message.content for c in client.chat.completions.create(**kw).choices]
    b = [c.message.content for c in client.chat.completions.create(**kw).choices]
    assert len(a) == 3 and a == b
    assert [c.index for c in client.chat.completions.create(**kw).choices] == [0, 1, 2]


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_stream_equals_non_stream(client, temperature):
    kw = dict(model="tiny-random", messages=MSGS, temperature=temperature, max_tokens=10, seed=5)
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_stop_strings_cut_text_stream_and_not(client):
    kw = dict(model="tiny-random", messages=MSGS, temperature=0, max_tokens=16)
    full = client.chat.completions.create(**kw).choices[0].message.content
    if len(full) < 6:
        pytest.skip("the tiny model's greedy reply is too short to cut")
    stop = full[3:5]
    expected = full[: full.find(stop)]
    r = client.chat.completions.create(stop=[stop], **kw).choices[0]
    assert r.message.content == expected and r.finish_reason == "stop"
    chunks = list(client.chat.completions.create(stop=stop, stream=True, **kw))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_server_errors_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="gpt-5", messages=MSGS)
    with pytest.raises(openai.BadRequestError, match="context window"):  # tiny model: 1024 positions
        client.chat.completions.create(model="tiny-random", messages=[{"role": "user", "content": "word " * 1500}])
    with pytest.raises(openai.BadRequestError, match="context window"):
        client.chat.completions.create(model="tiny-random", messages=MSGS, max_tokens=5000)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="tiny-random", messages=MSGS, temperature=3.0)
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="tiny-random", messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="only n = 1"):
        client.chat.completions.create(model="tiny-random", messages=MSGS, n=2, stream=True)


def test_api_key_required_when_set(tiny):
    from fastapi.testclient import TestClient

    from finealign.serve.openai_server import create_app

    app = create_app(model=tiny[0], tokenizer=tiny[1], served_name="t", api_key="sekret")
    with TestClient(app) as tc:
        r = tc.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert tc.get("/v1/models", headers={"Authorization": "Bearer sekret"}).json()["data"][0]["id"] == "t"


# ----------------------------------------------------------------------------------------- editor over HTTP

PAIRS = [
    {"id": "p1", "prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "The capital is Lyon."},
    {"id": "p2", "prompt": "Name a primary colour.", "chosen": "Red.", "rejected": "Green is a primary colour."},
    {"id": "p3", "prompt": "Two plus two?", "chosen": "4", "rejected": "Two plus two is five."},
]


def test_cli_edit_openai_editor_against_real_server(tiny_server, tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("FINEALIGN_EDITOR_API_KEY", "local")
    inp = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "edits.jsonl"
    rc = run_cli(["edit", inp, out, "--editor", "openai:tiny-random", "--base-url", tiny_server,
                  "--concurrency", "2", "--max-new-tokens", "12", "-q"])
    assert rc == 0
    recs = {r["id"]: r for r in _read(out)}
    failed = {f["id"]: f for f in _read(failed_path(out))} if failed_path(out).exists() else {}
    assert set(recs) | set(failed) == {"p1", "p2", "p3"} and not set(recs) & set(failed) and recs
    assert all(f["reason"] == "empty" for f in failed.values())  # the only way a greedy tiny reply fails
    # greedy: the endpoint's edits equal the same model used in-process as a local editor
    local = LocalEditor(tiny, max_new_tokens=12, batch_size=1)
    for res in local.edit([EditRequest(p["id"], p["prompt"], p["rejected"]) for p in PAIRS]):
        if res.ok:
            assert recs[res.id]["edited"] == res.edited
            assert recs[res.id]["meta"]["editor"] == f"openai:tiny-random@{tiny_server}"
            assert recs[res.id]["meta"]["template"] == EDIT_TEMPLATE_V1.id
            assert recs[res.id]["meta"]["finish_reason"] == res.finish_reason in ("stop", "length")
        else:
            assert res.id in failed


def test_cli_edit_unknown_model_is_one_line_error(tiny_server, tmp_path, capsys):
    inp = _jsonl(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "edits.jsonl"
    assert run_cli(["edit", inp, out, "--editor", "openai:no-such-model", "--base-url", tiny_server, "-q"]) == 1
    err = capsys.readouterr().err
    assert "404" in err and "no-such-model" in err and "Traceback" not in err
    assert _read(out) == []


# ----------------------------------------------------------------------------------------- fault injection


class Faults:
    """Behaviour by the first word of the response to edit: ok, flaky (429 twice), broken (500),
    empty (empty reply), slow (sleeps past the client's timeout); ``healed`` makes all of them ok."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.healed = False
        self.inflight = 0
        self.max_inflight = 0
        self.delay = 0.0

    def app(self):
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            user = body["messages"][-1]["content"]
            response = user.split("### Response\n", 1)[1].split("\n\n### Corrected response", 1)[0]
            tag = response.split()[0]
            self.calls[tag] += 1
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                await asyncio.sleep(self.delay)
                content = response.replace("wrong", "right")
                if not self.healed:
                    if tag == "flaky" and self.calls[tag] <= 2:
                        return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"retry-after": "0"})
                    if tag == "broken":
                        return JSONResponse({"error": {"message": "internal"}}, 500)
                    if tag == "empty":
                        content = ""
                    if tag == "slow":
                        await asyncio.sleep(1.0)
                return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            finally:
                self.inflight -= 1

        return app


FAULT_PAIRS = [{"id": t, "prompt": "q", "chosen": "c", "rejected": f"{t} answer is wrong here"}
               for t in ("ok", "flaky", "broken", "empty", "slow")]


def test_retries_backoff_timeouts_failures_and_resume(tmp_path):
    faults = Faults()
    inp = _jsonl(tmp_path / "pairs.jsonl", FAULT_PAIRS)
    out = tmp_path / "edits.jsonl"
    with serve_in_thread(faults.app()) as url:
        ed = OpenAIEditor("m", base_url=url, api_key="k", concurrency=5, retries=2, timeout=0.4, backoff=0.01)
        stats = run_edits(ed, inp, out)
        assert (stats.attempted, stats.written, stats.failed) == (5, 2, 3)
        assert stats.failure_reasons == {"http_500": 1, "empty": 1, "timeout": 1}
        # flaky: two 429s then success (3 calls); broken and slow: 1 try + 2 retries; empty: not retried
        assert faults.calls == {"ok": 1, "flaky": 3, "broken": 3, "empty": 1, "slow": 3}
        recs = {r["id"]: r for r in _read(out)}
        assert set(recs) == {"ok", "flaky"}
        # "wrong" -> "right": 1 of 5 words = 0.2
        assert recs["ok"]["edited"] == "ok answer is right here" and recs["ok"]["meta"]["edit_ratio"] == 0.2
        failed = {f["id"]: f for f in _read(failed_path(out))}
        assert set(failed) == {"broken", "empty", "slow"} and failed["broken"]["attempts"] == 3
        # rerun after the endpoint recovers: only the three failures are sent again
        faults.healed = True
        faults.calls.clear()
        stats = run_edits(ed, inp, out)
        assert (stats.done_before, stats.attempted, stats.retried_failed, stats.written, stats.failed) == (2, 3, 3, 3, 0)
        assert faults.calls == {"broken": 1, "empty": 1, "slow": 1}
        assert not failed_path(out).exists() and len(_read(out)) == 5
        ed.close()


def test_concurrency_limit_and_connection_refused(tmp_path):
    faults = Faults()
    faults.delay = 0.2
    rows = [{"id": f"r{i}", "prompt": "q", "chosen": "c", "rejected": "ok one two wrong"} for i in range(6)]
    inp = _jsonl(tmp_path / "pairs.jsonl", rows)
    with serve_in_thread(faults.app()) as url:
        ed = OpenAIEditor("m", base_url=url, api_key="k", concurrency=2, retries=0, timeout=5)
        stats = run_edits(ed, inp, tmp_path / "a.jsonl")
        assert stats.written == 6 and faults.max_inflight == 2
    # a port nobody listens on (the server above has stopped): connection errors are counted, not raised
    ed = OpenAIEditor("m", base_url=url, api_key="k", retries=1, backoff=0.01, timeout=2)
    stats = run_edits(ed, inp, tmp_path / "b.jsonl")
    assert stats.failed == 6 and stats.failure_reasons == {"connection": 6}


def test_fatal_status_raises_after_keeping_work(tmp_path):
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat():
        return JSONResponse({"error": {"message": "bad key"}}, 401)

    with serve_in_thread(app) as url:
        ed = OpenAIEditor("m", base_url=url, api_key="k", retries=3, backoff=0.01)
        with pytest.raises(EditorFatal, match="refused the API key"):
            run_edits(ed, _jsonl(tmp_path / "p.jsonl", PAIRS), tmp_path / "o.jsonl")


def test_cli_serve_bad_address_fails_before_loading(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert run_cli(["serve", "--model", "tiny-random", "--port", s.getsockname()[1]]) == 1
    assert "cannot serve on 127.0.0.1" in capsys.readouterr().err
    assert run_cli(["serve", "--model", "tiny-random", "--port", 70000]) == 1
    assert "--port" in capsys.readouterr().err
