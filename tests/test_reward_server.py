"""``finealign serve --reward SPEC``: OpenRLHF's remote reward-model request against a live server on
loopback, bad input answered 400 while the server keeps serving, batching of waiting requests, the
bounded queue, SIGTERM. The ``sim:facts`` gold scorer needs no model."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from finealign.rewards.base import TokenScorer, TokenScores
from finealign.serve.reward_server import create_reward_app, split_query

from conftest import serve_root

Q = "Which chemical element has the symbol Rn? Answer in one sentence."  # a prompt sim:facts generates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_split_query():
    assert split_query("P: hi<|im_end|>", "P: ") == ("hi", True)
    assert split_query("P: hi<|im_end|><|endoftext|><|endoftext|>", "P: ") == ("hi", True)  # stop, then padding
    assert split_query("P: hi", "P: ") == ("hi", False)  # cut by the length limit
    with pytest.raises(ValueError):
        split_query("X: hi", "P: ")


def test_openrlhf_request_against_a_live_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "finealign.cli.main", "serve", "--reward", "sim:facts",
                             "--port", str(port), "--max-prompt-tokens", "200", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("reward server did not come up")
        # OpenRLHF 0.11 (utils/agent.py): {"query": prompt + response decoded with special tokens, "prompts", "labels"}
        body = {"query": [Q + "Rn is radon.<|im_end|>", Q + "Rn is gold"], "prompts": [Q, Q], "labels": ["", ""]}
        r = httpx.post(f"{url}/get_reward", json=body, timeout=30)
        assert r.status_code == 200, r.text
        out = r.json()
        assert set(out) >= {"rewards", "scores", "extra_logs", "token_rewards"}
        assert out["rewards"] == out["scores"] and len(out["rewards"]) == 2
        assert out["rewards"][0] > out["rewards"][1]  # the right element beats a wrong one under the gold reward
        assert out["extra_logs"]["finealign_truncated"] == [0.0, 1.0]  # the second has no stop marker
        for total, tr in zip(out["rewards"], out["token_rewards"]):
            assert sum(tr["rewards"]) == pytest.approx(total)
            assert len(tr["offsets"]) == len(tr["rewards"])
        assert [tr["stopped"] for tr in out["token_rewards"]] == [True, False]
        # bad input: 400 with a message, and the server keeps serving
        bad = httpx.post(f"{url}/get_reward", json={"query": [Q + "x"], "prompts": [Q, Q]}, timeout=30)
        assert bad.status_code == 400 and "same length" in bad.json()["error"]["message"]
        long_p = Q + " " * 300
        bad = httpx.post(f"{url}/get_reward", json={"query": [long_p + "x"], "prompts": [long_p]}, timeout=30)
        assert bad.status_code == 400 and "at most 200" in bad.json()["error"]["message"]
        bad = httpx.post(f"{url}/get_reward", json={"query": ["hello x"], "prompts": ["hello "]}, timeout=30)
        assert bad.status_code == 400 and "query[0]" in bad.json()["error"]["message"]
        again = httpx.post(f"{url}/get_reward", json=body, timeout=30)
        assert again.status_code == 200 and again.json()["rewards"] == out["rewards"]
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        proc.wait(timeout=30)
        print(f"exited {time.monotonic() - t0:.2f} s after SIGTERM (rc {proc.returncode})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class GatedScorer(TokenScorer):
    """Records each call's batch size; the first call waits for ``gate``."""

    name = "gated"

    def __init__(self):
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.started = threading.Event()

    def score_tokens(self, prompts, responses):
        self.calls.append(len(responses))
        if len(self.calls) == 1:
            self.started.set()
            assert self.gate.wait(20)
        return [TokenScores([-1], [(len(r), len(r))], [float(len(r))]) for r in responses]

    def score(self, prompts, responses):
        return [float(len(r)) for r in responses]


def test_waiting_requests_are_batched_and_the_queue_is_bounded():
    sc = GatedScorer()
    app = create_reward_app(sc, max_queue=2, batch_size=8)
    results: dict[str, httpx.Response] = {}

    def ask(tag: str, url: str):
        results[tag] = httpx.post(f"{url}/get_reward", json={"query": ["p " + tag], "prompts": ["p "]}, timeout=30)

    with serve_root(app) as url:
        first = threading.Thread(target=ask, args=("a", url))
        first.start()
        assert sc.started.wait(10)
        waiting = [threading.Thread(target=ask, args=(t, url)) for t in ("bb", "ccc")]
        for t in waiting:
            t.start()
        for _ in range(200):
            if app.state.served.worker.queued == 2:
                break
            time.sleep(0.05)
        assert app.state.served.worker.queued == 2
        ask("dddd", url)  # a third waiting request: over max_queue
        assert results["dddd"].status_code == 503 and results["dddd"].json()["error"]["code"] == "queue_full"
        sc.gate.set()
        for t in [first, *waiting]:
            t.join(20)
    assert sc.calls == [1, 2]  # the two that waited were scored in one batch
    assert [results[t].json()["rewards"] for t in ("a", "bb", "ccc")] == [[1.0], [2.0], [3.0]]


def test_a_request_whose_client_leaves_while_waiting_is_dropped():
    sc = GatedScorer()
    app = create_reward_app(sc, max_queue=4)
    done = {}

    def ask_first(url):
        done["a"] = httpx.post(f"{url}/get_reward", json={"query": ["p a"], "prompts": ["p "]}, timeout=30)

    with serve_root(app) as url:
        first = threading.Thread(target=ask_first, args=(url,))
        first.start()
        assert sc.started.wait(10)
        with pytest.raises(httpx.TimeoutException):  # this client gives up while its request waits
            httpx.post(f"{url}/get_reward", json={"query": ["p bb"], "prompts": ["p "]}, timeout=0.5)
        worker = app.state.served.worker
        for _ in range(100):  # the server notices the disconnect within its poll interval
            if worker.queued == 1 and next(iter(worker._queue)).cancelled.is_set():
                break
            time.sleep(0.05)
        sc.gate.set()
        first.join(20)
        for _ in range(100):
            if worker.stats["dropped"] == 1:
                break
            time.sleep(0.05)
    assert done["a"].status_code == 200
    assert sc.calls == [1] and worker.stats["dropped"] == 1  # the abandoned request was never scored


def test_split_query_strips_left_padding():
    from finealign.serve.reward_server import split_query

    # a left-padded batch decodes with pad/EOS markers before the prompt; both sides lose them
    assert split_query("<|endoftext|><pad>Q: hi. A: yes<|im_end|><|endoftext|>", "<pad>Q: hi. ") == ("A: yes", True)
    with pytest.raises(ValueError, match="does not start with its prompt"):
        split_query("<pad>Other. A: yes", "Q: hi. ")
