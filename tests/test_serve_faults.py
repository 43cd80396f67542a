"""``finealign serve`` under faults (issue 17, faults 1-2): clients that disconnect or time out free
the model at the next token, requests queue in arrival order behind a bounded queue (503 when full),
and SIGTERM under load exits within a few seconds. Real uvicorn servers on loopback, the tiny model,
every wait bounded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from test_serve import serve_in_thread

MSGS = [{"role": "user", "content": "Tell me a long story about a cat."}]
STEP_S = 0.02  # the slowed model: each forward pass (one decoding step) takes at least this long


@pytest.fixture()
def slow_tiny(tiny_fresh):
    """The tiny model with every forward pass slowed to >= STEP_S, so a long request is long."""
    model, tok = tiny_fresh
    model.register_forward_pre_hook(lambda *_: time.sleep(STEP_S))
    return model, tok


def _app(model_tok, **kw):
    from finealign.serve.openai_server import create_app

    return create_app(model=model_tok[0], tokenizer=model_tok[1], served_name="tiny-random", **kw)


def _health(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/health", timeout=5).json()


def _wait_until(pred, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _small_requests(url: str, n: int = 3) -> list[str]:
    """``n`` small requests, each with a client time-out far below what a wedged model would need."""
    c = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=10)
    try:
        return [c.chat.completions.create(model="tiny-random", messages=MSGS, max_tokens=3, temperature=0)
                .choices[0].finish_reason for _ in range(n)]
    finally:
        c.close()


def test_stream_client_that_disconnects_frees_the_model(slow_tiny):
    app = _app(slow_tiny)
    with serve_in_thread(app) as url:
        body = {"model": "tiny-random", "messages": MSGS, "max_tokens": 900, "temperature": 0.8, "seed": 1,
                "stream": True}
        with httpx.Client(timeout=10) as h, h.stream("POST", f"{url}/chat/completions", json=body) as r:
            assert r.status_code == 200
            chunks = 0
            for line in r.iter_lines():
                chunks += line.startswith("data: ")
                if chunks >= 4:
                    break  # the client goes away after 4 chunks (the README's example, stopped)
        # at 900 x 20 ms the stream would hold the model for 18 s; it must stop at its next token
        _wait_until(lambda: not _health(url)["running"], what="the abandoned stream to stop")
        assert all(f in ("stop", "length") for f in _small_requests(url))
        stats = app.state.served.stats
        assert stats["stopped"] == 1 and stats["tokens"] < 900


def test_client_time_out_stops_generation_at_the_next_token(slow_tiny):
    app = _app(slow_tiny)
    with serve_in_thread(app) as url:
        c = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            c.chat.completions.create(model="tiny-random", messages=MSGS, max_tokens=900, temperature=0)
        c.close()
        _wait_until(lambda: not _health(url)["running"], what="the timed-out request to stop")
        stats = app.state.served.stats
        assert stats["stopped"] == 1 and stats["tokens"] < 900  # 900 tokens would take >= 18 s
        assert len(_small_requests(url)) == 3


def test_queue_is_fair_and_bounded_with_a_clear_503(slow_tiny):
    app = _app(slow_tiny, max_queue=2)
    done: list[str] = []
    errors: list[Exception] = []

    def ask(tag: str):
        try:
            with httpx.Client(timeout=20) as h:
                r = h.post(f"{url}/chat/completions", json={"model": "tiny-random", "messages": MSGS,
                                                           "max_tokens": 3, "temperature": 0})
            r.raise_for_status()
            done.append(tag)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    with serve_in_thread(app) as url:
        body = {"model": "tiny-random", "messages": MSGS, "max_tokens": 900, "stream": True, "temperature": 0}
        waiting = []
        with httpx.Client(timeout=10) as h, h.stream("POST", f"{url}/chat/completions", json=body) as long:
            lines = long.iter_lines()  # keep a reference: a collected line iterator closes the stream
            next(lines)  # the long stream holds the model (900 x 20 ms) while we read nothing more
            _wait_until(lambda: _health(url)["running"], what="the long request to start")
            for tag in ("first", "second"):
                t = threading.Thread(target=ask, args=(tag,))
                t.start()
                waiting.append(t)
                _wait_until(lambda n=len(waiting): _health(url)["queued"] == n, what=f"{tag} to queue")
            r = httpx.post(f"{url}/chat/completions", timeout=5,
                           json={"model": "tiny-random", "messages": MSGS, "max_tokens": 3})
            assert r.status_code == 503 and r.headers.get("retry-after")
            err = r.json()["error"]
            assert err["code"] == "queue_full" and "2" in err["message"]
        # the long stream's client has gone: the two waiting requests run, in arrival order
        for t in waiting:
            t.join(timeout=30)
        assert done == ["first", "second"] and not errors
        assert app.state.served.stats["rejected"] == 1 and app.state.served.stats["stopped"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_under_load_exits_within_seconds(tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "finealign.cli.main", "serve", "--model", "tiny-random",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_until(up, timeout=120, what="the server to start")
        # load: streams and batched requests that would keep a model busy for well over a minute
        bodies = [{"model": "tiny-random", "messages": MSGS, "max_tokens": 900, "n": 16, "temperature": 1.0}] * 3
        bodies += [{"model": "tiny-random", "messages": MSGS, "max_tokens": 900, "temperature": 1.0,
                    "stream": True}] * 3

        def fire(b):
            try:
                with httpx.Client(timeout=120) as h:
                    if b.get("stream"):
                        with h.stream("POST", url + "/v1/chat/completions", json=b) as r:
                            for _ in r.iter_lines():
                                pass
                    else:
                        h.post(url + "/v1/chat/completions", json=b)
            except httpx.HTTPError:
                pass

        threads = [threading.Thread(target=fire, args=(b,), daemon=True) for b in bodies]
        for t in threads:
            t.start()
        _wait_until(lambda: httpx.get(url + "/health", timeout=5).json()["queued"] >= 3, what="load to queue")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.monotonic() - t0
        print(f"exited {elapsed:.2f} s after SIGTERM (rc {proc.returncode})")
        assert proc.returncode is not None, "still running 30 s after SIGTERM"
        assert elapsed < 5, f"exited {elapsed:.1f} s after SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert "Traceback" not in out, out[-3000:]


def test_health_reports_the_queue(tiny):
    from fastapi.testclient import TestClient

    with TestClient(_app(tiny)) as tc:
        h = tc.get("/health").json()
        assert h["status"] == "ok" and h["queued"] == 0 and h["running"] is False and h["max_queue"] >= 1
        r = tc.post("/v1/chat/completions", json={"model": "tiny-random", "messages": MSGS, "max_tokens": 2})
        assert r.status_code == 200 and json.loads(r.text)["usage"]["completion_tokens"] <= 2
