"""An OpenAI-compatible chat server over any local model (FastAPI).

``create_app("smollm2-135m-instruct")`` (any model spec, or ``model=``/``tokenizer=`` already
loaded) returns an ASGI app with

* ``GET /v1/models``: the one served model (its id is ``served_name``, default the spec);
* ``POST /v1/chat/completions``: ``messages`` (string content or text parts), ``temperature``
  (0 = greedy), ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``n``, ``seed``, ``stop``
  (a string or up to 4), ``stream`` (server-sent events, ``n = 1``; with
  ``stream_options.include_usage`` a last chunk carries the usage); the reply has OpenAI's
  ``choices`` (``finish_reason`` ``stop`` or ``length``) and ``usage`` token counts;
* ``GET /health``: the model, how many requests wait, whether one runs, the queue's bound.

One worker thread owns the model (``serve.worker``): requests run one at a time in arrival order;
at most ``max_queue`` wait, and the next gets 503 (``code: queue_full``, ``Retry-After``). A request
whose client disconnects or times out, while it waits or while it runs, is cancelled: its
generation stops at the next token and the model goes to the next request. ``close_app(app)``
(called by ``finealign serve`` on SIGTERM/Ctrl-C and by the app's shutdown) cancels everything, so
the server exits within a few seconds under load. Decoding is ``finealign.generation``'s (same
seeding): with the same ``seed`` a streamed reply equals the non-streamed one. Stop strings cut the
text after decoding (``n > 1``) or as it streams. Errors come back in OpenAI's shape
``{"error": {"message", "type", "code"}}``: 400 for a bad request or a prompt over the context
window (the policy of docs/long-inputs.md: the server refuses, it does not cut), 401 for a wrong key
(when the server has one), 404 for a model name that is not served, 503 when the queue is full or
the server is shutting down.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator, Iterator, Union

import torch
from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from .http_common import _ApiError, _outcome, served_app, submit_job
from .worker import Job, ModelWorker

__all__ = ["create_app", "close_app", "ChatRequest"]

DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_QUEUE = 64


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that the server honours (others are ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None


def _text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if p.get("type") != "text" or not isinstance(p.get("text"), str):
            raise _ApiError(400, f"only text content parts are supported, got type {p.get('type')!r}")
        parts.append(p["text"])
    return "".join(parts)


def _stops(stop) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > 4 or any(not s for s in stops):
        raise _ApiError(400, "stop: at most 4 non-empty strings")
    return stops


def _cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to its first stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class _Served:
    def __init__(self, model, tokenizer, name: str, max_queue: int = DEFAULT_MAX_QUEUE):
        from ..edits.editors import context_window

        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.tokenizer.padding_side = "left"
        self.context = context_window(model)
        self.created = int(time.time())
        self.worker = ModelWorker(max_queue)

    @property
    def stats(self):
        """Counts of jobs completed / stopped / dropped / failed / rejected and tokens decoded."""
        return self.worker.stats

    def submit(self, run) -> Job:
        """Queue ``run(job)`` on the model's thread; 503 when the queue is full or the server is closing."""
        return submit_job(self.worker, Job(run))


async def _checked(served: _Served, req: ChatRequest) -> tuple[list[dict], list[str], int, int]:
    """(messages, stop strings, prompt tokens, max new tokens) of a request, or the ``_ApiError`` that
    refuses it: 404 for another model, 400 for a bad role or stop list, 400 ``context_length_exceeded``
    for a prompt (+ ``max_tokens``) over the window (the server refuses, it does not cut)."""
    from ..generation import render_prompt

    if req.model and req.model != served.name:
        raise _ApiError(404, f"model {req.model!r} not found; this server serves {served.name!r}",
                        "invalid_request_error", "model_not_found")
    messages = []
    for i, m in enumerate(req.messages):
        if m.role not in ("system", "user", "assistant"):
            raise _ApiError(400, f"messages[{i}].role: expected system, user or assistant, got {m.role!r}")
        messages.append({"role": m.role, "content": _text(m.content)})
    stops = _stops(req.stop)
    tok = served.tokenizer
    prompt_tokens = await run_in_threadpool(  # a long prompt is tokenized off the event loop
        lambda: len(tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"]))
    room = (served.context - prompt_tokens) if served.context else None
    max_new = req.max_completion_tokens or req.max_tokens
    if room is not None and room < 1:
        raise _ApiError(400, f"the prompt has {prompt_tokens} tokens; the model's context window is "
                             f"{served.context}", code="context_length_exceeded")
    if max_new is None:
        max_new = DEFAULT_MAX_TOKENS if room is None else min(DEFAULT_MAX_TOKENS, room)
    elif room is not None and max_new > room:
        raise _ApiError(400, f"prompt ({prompt_tokens} tokens) + max_tokens ({max_new}) exceeds the model's "
                             f"context window of {served.context} tokens", code="context_length_exceeded")
    return messages, stops, prompt_tokens, max_new


def _completion(model_name: str, cid: str, rows, stops: list[str], prompt_tokens: int) -> dict:
    """The ``chat.completion`` body of decoded rows (stop strings cut, usage counted)."""
    choices, completion_tokens = [], 0
    for j, c in enumerate(rows):
        text, stopped = _cut(c.text, stops)
        completion_tokens += c.n_tokens
        choices.append({"index": j, "message": {"role": "assistant", "content": text}, "logprobs": None,
                        "finish_reason": "stop" if stopped or c.finish_reason == "stop" else "length"})
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model_name,
            "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}}


def close_app(app) -> None:
    """Cancel every queued and running request of ``app`` and take no new ones (shutdown)."""
    app.state.served.worker.close()


def create_app(model_spec: str | None = None, *, model=None, tokenizer=None, served_name: str | None = None,
               dtype: str = "float32", device: str = "auto", api_key: str | None = None,
               max_queue: int = DEFAULT_MAX_QUEUE):
    """The FastAPI app serving ``model_spec`` (or an already loaded ``model`` + ``tokenizer``).

    ``max_queue``: requests that may wait for the model; one more gets 503 ``queue_full``.
    """
    if model is None:
        if not model_spec:
            from ..errors import FinealignError

            raise FinealignError("create_app needs a model spec or a loaded model and tokenizer")
        from ..models import load_model

        model, tokenizer = load_model(model_spec, dtype=dtype, device=device)
    name = served_name or model_spec or str(getattr(model.config, "_name_or_path", "") or "local-model")
    served = _Served(model, tokenizer, name, max_queue)

    app, check_key = served_app("finealign OpenAI-compatible server", served, api_key, "model")

    @app.get("/v1/models")
    def list_models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "finealign"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        check_key(request)
        messages, stops, prompt_tokens, max_new = await _checked(served, req)
        seed = req.seed if req.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        cid = "chatcmpl-" + uuid.uuid4().hex
        if req.stream:
            if req.n != 1:
                raise _ApiError(400, "stream: only n = 1 is supported")
            include_usage = bool(req.stream_options and req.stream_options.include_usage)

            def stream(job: Job) -> None:
                for tok in _stream_tokens(served.model, served.tokenizer, messages, seed=seed,
                                          temperature=req.temperature, top_p=req.top_p, max_new_tokens=max_new):
                    job.step(1)  # raises Cancelled once the client is gone: stop at this token
                    job.emit("token", tok)

            job = served.submit(stream)
            return _JobStream(job, _sse(served, job, cid, req, max_new, stops, prompt_tokens, include_usage),
                              media_type="text/event-stream")
        from ..generation import generate_completions

        def complete(job: Job):
            return generate_completions(served.model, served.tokenizer, [messages], n=req.n,
                                        temperature=req.temperature, top_p=req.top_p, max_new_tokens=max_new,
                                        seed=seed, batch_size=req.n, prompt_ids=["0"], on_step=job.step)[0]

        rows = await _outcome(served.submit(complete), request)
        return _completion(served.name, cid, rows, stops, prompt_tokens)

    return app


@torch.no_grad()
def _stream_tokens(model, tokenizer, messages, *, seed: int, temperature: float, top_p: float,
                   max_new_tokens: int) -> Iterator[int]:
    """Token ids of one completion, one at a time: ``generation.decode_steps`` for one row (same per-row
    seed, same sampling), so the stream equals the batch result. Stops before EOS."""
    from ..generation import decode_steps, render_prompt, row_seed, stop_token_ids

    stops = set(stop_token_ids(model, tokenizer))
    seeds = [row_seed(seed, "0", 0)] if temperature > 0 else None
    for nxt, _ in decode_steps(model, tokenizer, [render_prompt(tokenizer, messages)], seeds,
                               temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens):
        tok = int(nxt.item())
        if tok in stops:
            return
        yield tok


class _JobStream(StreamingResponse):
    """A streamed response that cancels its job however the response ends (finished, client gone)."""

    def __init__(self, job: Job, content, **kw):
        super().__init__(content, **kw)
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


async def _sse(served: _Served, job: Job, cid: str, req: ChatRequest, max_new: int, stops: list[str],
               prompt_tokens: int, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events of one streamed completion, from the tokens its job emits."""
    created = int(time.time())

    def chunk(delta: dict, finish: str | None) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""}, None)
        toks: list[int] = []
        sent = 0  # characters of the text already sent
        finish = "length"
        while True:
            kind, value = await job.events.get()
            if kind == "cancelled":  # only the server cancels a stream whose client is still there
                err = {"message": "the server is shutting down", "type": "server_error", "code": "shutting_down"}
                yield f"data: {json.dumps({'error': err})}\n\n"
                return
            if kind == "error":
                raise value
            if kind == "done":
                if len(toks) < max_new:
                    finish = "stop"
                text = _cut(served.tokenizer.decode(toks, skip_special_tokens=True), stops)[0]
                if len(text) > sent:
                    yield chunk({"content": text[sent:]}, None)
                break
            toks.append(value)
            text = served.tokenizer.decode(toks, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 character: wait for the next token
            cut, stopped = _cut(text, stops)
            if stopped:
                job.cancel()  # the rest of the completion is not wanted: free the model
                if len(cut) > sent:
                    yield chunk({"content": cut[sent:]}, None)
                finish = "stop"
                break
            safe = len(text) - _held_back(text, stops)
            if safe > sent:
                yield chunk({"content": text[sent:safe]}, None)
                sent = safe
        yield chunk({}, finish)
        if include_usage:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.name,
                    "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(toks),
                                             "total_tokens": prompt_tokens + len(toks)}}
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()  # client gone (the response task was cancelled) or finished: either way, stop decoding
