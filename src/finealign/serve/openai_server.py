"""An OpenAI-compatible chat server over any local model (FastAPI).

``create_app("smollm2-135m-instruct")`` (any model spec, or ``model=``/``tokenizer=`` already
loaded) returns an ASGI app with

* ``GET /v1/models``: the one served model (its id is ``served_name``, default the spec);
* ``POST /v1/chat/completions``: ``messages`` (string content or text parts), ``temperature``
  (0 = greedy), ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``n``, ``seed``, ``stop``
  (a string or up to 4), ``stream`` (server-sent events, ``n = 1``; with
  ``stream_options.include_usage`` a last chunk carries the usage); the reply has OpenAI's
  ``choices`` (``finish_reason`` ``stop`` or ``length``) and ``usage`` token counts;
* ``GET /health``.

One lock serialises the model: requests queue and run one at a time. Decoding is
``finealign.generation``'s (same seeding): with the same ``seed`` a streamed reply equals the
non-streamed one. Stop strings cut the text after decoding (``n > 1``) or as it streams. Errors
come back in OpenAI's shape ``{"error": {"message", "type", "code"}}``: 400 for a bad request or a
prompt over the context window, 401 for a wrong key (when the server has one), 404 for a model
name that is not served.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Iterator, Union

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["create_app", "ChatRequest"]

DEFAULT_MAX_TOKENS = 512


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


class _ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


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
    def __init__(self, model, tokenizer, name: str):
        from ..edits.editors import context_window

        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.tokenizer.padding_side = "left"
        self.context = context_window(model)
        self.created = int(time.time())
        self.lock = threading.Lock()


def create_app(model_spec: str | None = None, *, model=None, tokenizer=None, served_name: str | None = None,
               dtype: str = "float32", device: str = "auto", api_key: str | None = None):
    """The FastAPI app serving ``model_spec`` (or an already loaded ``model`` + ``tokenizer``)."""
    if model is None:
        if not model_spec:
            from ..errors import FinealignError

            raise FinealignError("create_app needs a model spec or a loaded model and tokenizer")
        from ..models import load_model

        model, tokenizer = load_model(model_spec, dtype=dtype, device=device)
    name = served_name or model_spec or str(getattr(model.config, "_name_or_path", "") or "local-model")
    served = _Served(model, tokenizer, name)
    app = FastAPI(title="finealign OpenAI-compatible server", version="1")
    app.state.served = served

    def error_response(status: int, message: str, type_: str, code: str | None = None):
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": type_,
                                                                   "param": None, "code": code}})

    @app.exception_handler(_ApiError)
    async def _api_error(_req, e: _ApiError):
        return error_response(e.status, e.message, e.type, e.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, e: RequestValidationError):
        msgs = ["{}: {}".format(".".join(str(x) for x in err.get("loc", ())[1:]) or "body", err.get("msg"))
                for err in e.errors()]
        return error_response(400, "; ".join(msgs), "invalid_request_error")

    def check_key(request: Request) -> None:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise _ApiError(401, "invalid or missing API key", "authentication_error", "invalid_api_key")

    @app.get("/health")
    def health():
        return {"status": "ok", "model": served.name}

    @app.get("/v1/models")
    def list_models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "finealign"}]}

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest, request: Request):
        check_key(request)
        if req.model and req.model != served.name:
            raise _ApiError(404, f"model {req.model!r} not found; this server serves {served.name!r}",
                            "invalid_request_error", "model_not_found")
        messages = []
        for i, m in enumerate(req.messages):
            if m.role not in ("system", "user", "assistant"):
                raise _ApiError(400, f"messages[{i}].role: expected system, user or assistant, got {m.role!r}")
            messages.append({"role": m.role, "content": _text(m.content)})
        stops = _stops(req.stop)
        from ..generation import render_prompt

        prompt_tokens = len(served.tokenizer(render_prompt(served.tokenizer, messages),
                                             add_special_tokens=False)["input_ids"])
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
        seed = req.seed if req.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        cid = "chatcmpl-" + uuid.uuid4().hex
        if req.stream:
            if req.n != 1:
                raise _ApiError(400, "stream: only n = 1 is supported")
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _sse(served, cid, messages, req, seed, max_new, stops, prompt_tokens, include_usage),
                media_type="text/event-stream")
        from ..generation import generate_completions

        with served.lock:
            rows = generate_completions(served.model, served.tokenizer, [messages], n=req.n,
                                        temperature=req.temperature, top_p=req.top_p, max_new_tokens=max_new,
                                        seed=seed, batch_size=req.n, prompt_ids=["0"])[0]
        choices, completion_tokens = [], 0
        for j, c in enumerate(rows):
            text, stopped = _cut(c.text, stops)
            completion_tokens += c.n_tokens
            choices.append({"index": j, "message": {"role": "assistant", "content": text}, "logprobs": None,
                            "finish_reason": "stop" if stopped or c.finish_reason == "stop" else "length"})
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": served.name,
                "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}}

    return app


@torch.no_grad()
def _stream_tokens(model, tokenizer, messages, *, seed: int, temperature: float, top_p: float,
                   max_new_tokens: int) -> Iterator[int]:
    """Token ids of one completion, one at a time, decoded like ``generation.decode_rows`` for one row
    (same per-row seed, same sampling), so the stream equals the batch result. Stops before EOS."""
    import inspect

    from transformers import DynamicCache

    from ..generation import inverse_cdf_sample, render_prompt, row_seed, stop_token_ids, top_p_filter

    dev = next(model.parameters()).device
    ids = tokenizer(render_prompt(tokenizer, messages), return_tensors="pt", add_special_tokens=False)["input_ids"].to(dev)
    mask = torch.ones_like(ids)
    stops = set(stop_token_ids(model, tokenizer))
    gen = None
    if temperature > 0:
        gen = torch.Generator(device=dev).manual_seed(row_seed(seed, "0", 0))
    try:
        fwd = inspect.signature(getattr(model, "get_base_model", lambda: model)().forward).parameters
    except (TypeError, ValueError):
        fwd = {}
    extra = {"logits_to_keep": 1} if "logits_to_keep" in fwd else {}
    cache = DynamicCache()
    step_ids, step_pos = ids, torch.arange(ids.shape[1], device=dev).unsqueeze(0)  # (1, T)
    for _ in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, past_key_values=cache,
                    use_cache=True, **extra)
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()  # (1, V)
        if gen is not None:
            probs = top_p_filter(torch.softmax(logits / temperature, dim=-1), top_p)
            nxt = inverse_cdf_sample(probs, torch.rand((), generator=gen, device=dev).unsqueeze(0))
        else:
            nxt = logits.argmax(dim=-1)
        tok = int(nxt.item())
        if tok in stops:
            return
        yield tok
        step_ids = nxt.unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype, device=dev)], dim=-1)


def _sse(served: _Served, cid: str, messages, req: ChatRequest, seed: int, max_new: int, stops: list[str],
         prompt_tokens: int, include_usage: bool) -> Iterator[str]:
    """Server-sent events of one streamed completion; holds the model lock while decoding."""
    created = int(time.time())

    def chunk(delta: dict, finish: str | None) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, None)
    toks: list[int] = []
    sent = 0  # characters of the text already sent
    finish = "length"
    with served.lock:
        for tok in _stream_tokens(served.model, served.tokenizer, messages, seed=seed, temperature=req.temperature,
                                  top_p=req.top_p, max_new_tokens=max_new):
            toks.append(tok)
            text = served.tokenizer.decode(toks, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 character: wait for the next token
            cut, stopped = _cut(text, stops)
            if stopped:
                if len(cut) > sent:
                    yield chunk({"content": cut[sent:]}, None)
                finish = "stop"
                break
            safe = len(text) - _held_back(text, stops)
            if safe > sent:
                yield chunk({"content": text[sent:safe]}, None)
                sent = safe
        else:
            if len(toks) < max_new:
                finish = "stop"
            text = _cut(served.tokenizer.decode(toks, skip_special_tokens=True), stops)[0]
            if len(text) > sent:
                yield chunk({"content": text[sent:]}, None)
    yield chunk({}, finish)
    if include_usage:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.name, "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(toks),
                          "total_tokens": prompt_tokens + len(toks)}}
        yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"
