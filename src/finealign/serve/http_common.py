"""What finealign's HTTP servers share (the OpenAI-compatible ``serve`` and the reward server): errors in
OpenAI's shape, the outcome of a queued job that a leaving client cancels, the app with its API key check,
``/health`` and a clean shutdown."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .worker import Closed, Job, QueueFull

DISCONNECT_POLL_S = 0.2  # how often a waiting non-streamed request checks that its client is still there


class _ApiError(Exception):
    """An HTTP error answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers


def _shutting_down() -> _ApiError:
    return _ApiError(503, "the server is shutting down", "server_error", "shutting_down")


def _error_handlers(app) -> None:
    """Errors in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``."""

    def error_response(status: int, message: str, type_: str, code: str | None = None, headers=None):
        return JSONResponse(status_code=status, headers=headers,
                            content={"error": {"message": message, "type": type_, "param": None, "code": code}})

    @app.exception_handler(_ApiError)
    async def _api_error(_req, e: _ApiError):
        return error_response(e.status, e.message, e.type, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, e: RequestValidationError):
        msgs = ["{}: {}".format(".".join(str(x) for x in err.get("loc", ())[1:]) or "body", err.get("msg"))
                for err in e.errors()]
        return error_response(400, "; ".join(msgs), "invalid_request_error")


async def _outcome(job: Job, request: Request):
    """The result of a non-streamed job; cancels it when its client disconnects meanwhile."""
    getter = asyncio.ensure_future(job.events.get())  # a non-streamed job sends one event: its outcome
    try:
        while not (await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S))[0]:
            if await request.is_disconnected():
                job.cancel()  # the client is gone (closed or timed out): free the model at the next token
                raise _ApiError(499, "the client closed the request")
    finally:
        if not getter.done():
            getter.cancel()
            job.cancel()  # this request's task was cancelled (server shutdown): so is its job
    kind, value = getter.result()
    if kind == "done":
        return value
    if kind == "error":
        raise value
    raise _shutting_down()


def served_app(title: str, served, api_key: str | None, name_key: str) -> tuple[FastAPI, Callable[[Request], None]]:
    """A FastAPI app around ``served`` (anything with a ``worker`` and a ``name``): its worker closed at
    shutdown, errors in OpenAI's shape, ``GET /health`` (``{"status", name_key: served.name, "queued",
    "running", "max_queue"}``); returns the app and ``check_key(request)``, which raises 401 unless the
    request carries ``Bearer api_key`` (no key: every request passes)."""

    @asynccontextmanager
    async def lifespan(_app):
        yield
        served.worker.close()

    app = FastAPI(title=title, version="1", lifespan=lifespan)
    app.state.served = served
    _error_handlers(app)

    def check_key(request: Request) -> None:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise _ApiError(401, "invalid or missing API key", "authentication_error", "invalid_api_key")

    @app.get("/health")
    async def health():
        w = served.worker
        return {"status": "closing" if w.closed else "ok", name_key: served.name, "queued": w.queued,
                "running": w.running, "max_queue": w.max_queue}

    return app, check_key


def submit_job(worker, job: Job) -> Job:
    """Queue ``job`` on ``worker``; 503 ``queue_full`` when its queue is full, 503 when it is closing."""
    try:
        worker.submit(job)
    except QueueFull:
        raise _ApiError(503, f"the server is busy: {worker.max_queue} requests are already waiting; retry later",
                        "server_error", "queue_full", headers={"Retry-After": "1"}) from None
    except Closed:
        raise _shutting_down() from None
    return job
