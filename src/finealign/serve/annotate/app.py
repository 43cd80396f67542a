"""The annotation web app: one static page and a small JSON API under ``/api/`` (FastAPI).

Every ``/api/`` route but ``/api/health`` needs ``Authorization: Bearer TOKEN`` (a token from
``finealign annotate add-annotator``): reading items, the live diff and every write. The page itself
(``/``, ``/static/...``) holds no data; it reads the token from the URL fragment (``/#token=...``,
which browsers never send to the server) or asks for it.

Routes: ``GET /api/me`` (name, settings, progress), ``GET /api/next`` (the annotator's current or
next item), ``GET /api/items/{id}`` (an item assigned to them, with their annotation),
``GET /api/history``, ``POST /api/diff`` (the live diff), ``POST /api/submit`` (store the annotator's
answer: appended to their history of the item, and their latest answer; a skip that would replace their
submitted edit answers 409 unless it says ``"confirm": true``; the page then asks for ``/api/next``).

The live diff is the project's own edit alignment: ``core.align.diff_char_spans`` (the spans the
token labels of ``train token-rm`` are made from) and the minimality verdict of
``edits.minimality.check_edit`` (edit ratio vs ``max_ratio``). With a tokenizer, the diff also
names the response tokens that would get label 1 inside the chat template, as the token RM's
example encoder computes them, so the page shows what the reward model will learn.

Security: request bodies over ``max_body`` bytes get 413 before they are parsed; texts over
``max_chars`` characters get 422; every response carries a strict Content-Security-Policy (no inline
script, no third-party origin), ``nosniff`` and ``no-referrer``; the page writes data only as text
nodes (never HTML); SQL takes values as parameters only (``store``).
"""

from __future__ import annotations

import json
import threading
from importlib import resources
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ...core.align import diff_char_spans, spans_to_token_labels
from ...edits.minimality import check_edit
from ...errors import FinealignError
from .store import MAX_SECONDS, AnnotationStore, Annotator, Conflict, Invalid, NotAllowed, NotFound, Submission

__all__ = ["TokenView", "create_app", "diff_payload"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}


class TokenView:
    """Which response tokens get label 1 under ``tokenizer``, exactly as the token RM trainer labels them.

    The response is chat-templated after the prompt (``models.token_rm.encode_response``), each
    token's offsets are made relative to the response, and ``core.align.spans_to_token_labels``
    marks the tokens that overlap a changed span. Thread-safe (one lock around the tokenizer).
    """

    def __init__(self, tokenizer):
        from ...models.token_rm import encode_response  # imports torch: only when a tokenizer is used

        self._encode = encode_response
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    def changed(self, prompt, text: str, spans) -> dict:
        """``{"ranges": [[start, end], ...] of the labelled tokens, "changed": n, "tokens": T}``."""
        with self._lock:
            enc = self._encode(self.tokenizer, prompt, text)
        rel = [o if m else (0, 0) for o, m in zip(enc.offsets, enc.response_mask)]
        labels = spans_to_token_labels(rel, spans, text=text)
        ranges = [[max(0, s), min(len(text), e)] for (s, e), lab in zip(rel, labels) if lab]
        return {"ranges": ranges, "changed": sum(labels), "tokens": sum(enc.response_mask)}


def diff_payload(original: str, edited: str, max_ratio: float, *, tokens: TokenView | None = None,
                 prompt=None) -> dict:
    """The live diff of one edit: changed character spans of each side (``[start, end)``, code points),
    the edit ratio and the minimality status (``ok | unchanged | too_large``), optionally tokens."""
    sa, sb = diff_char_spans(original, edited)
    verdict = check_edit(original, edited, max_ratio)
    out = {"original_spans": [list(s) for s in sa], "edited_spans": [list(s) for s in sb],
           "edit_ratio": round(verdict.ratio, 4), "status": verdict.status, "max_ratio": max_ratio}
    if tokens is not None:
        out["tokens"] = {"original": tokens.changed(prompt, original, sa), "edited": tokens.changed(prompt, edited, sb)}
    return out


class _Guard:
    """ASGI middleware: refuse bodies over ``max_body`` bytes (413, before parsing) and add security headers."""

    def __init__(self, app, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self._too_large(send_secured)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                return await self._too_large(send_secured)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_secured)

    async def _too_large(self, send):
        body = json.dumps({"detail": f"request body over {self.max_body} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


Side = Literal["rejected", "chosen"]


class DiffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: int
    worse: Side | None = None
    edited: str


class SubmitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: int
    action: Literal["submit", "skip"] = "submit"
    worse: Side | None = None
    decision: Literal["accept", "correct", "reject"] | None = None
    edited: str | None = None
    flag: str | None = Field(None, max_length=500)
    seconds: float = Field(0.0, ge=0.0, le=MAX_SECONDS)
    confirm: bool = False


def create_app(db: str | Path | AnnotationStore, *, max_ratio: float = 0.5, lease_s: float = 1800.0,
               tokenizer=None, max_chars: int = 50_000, max_body: int = 1 << 20) -> FastAPI:
    """The app over the annotation database ``db`` (a path or an open :class:`AnnotationStore`).

    ``max_ratio``: minimality threshold of the edit-ratio meter; ``lease_s``: how long an unfinished
    assignment holds its item (both used only when ``db`` is a path; a store brings its own);
    ``tokenizer``: show token labels in the live diff (optional);
    ``max_chars``: longest edited text accepted; ``max_body``: largest request body in bytes.
    """
    store = db if isinstance(db, AnnotationStore) else AnnotationStore(db, lease_s=lease_s, max_ratio=max_ratio)
    tokens = TokenView(tokenizer) if tokenizer is not None else None
    static = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in STATIC}
    app = FastAPI(title="finealign annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.add_middleware(_Guard, max_body=max_body)

    for exc, code in ((NotFound, 404), (NotAllowed, 403), (Invalid, 422), (Conflict, 409), (FinealignError, 400)):
        app.add_exception_handler(exc, _handler(code))

    _page_routes(app, static)
    _api_routes(app, store, tokens, max_chars)
    return app


def _page_routes(app: FastAPI, static: dict[str, bytes]) -> None:
    """``/`` and ``/static/{app.js,app.css}``: the page, which holds no data."""

    def page(name: str) -> Response:
        return Response(static[name], media_type=STATIC[name], headers={"cache-control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def index():
        return page("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str):
        if name not in STATIC or name == "index.html":
            raise HTTPException(404, "not found")
        return page(name)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)


def _api_routes(app: FastAPI, store: AnnotationStore, tokens: TokenView | None, max_chars: int) -> None:
    """The JSON API under ``/api/`` (see the module docstring); a bearer token on every route but health."""

    def who(authorization: str | None = Header(None)) -> Annotator:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise HTTPException(401, "missing token: send Authorization: Bearer TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})
        found = store.annotator_for_token(authorization[7:].strip())
        if found is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        return found

    def check_len(text: str | None) -> None:
        if text is not None and len(text) > max_chars:
            raise Invalid(f"edited: {len(text)} characters, more than the limit of {max_chars}")

    @app.get("/api/health")
    def health():
        return {"ok": True}

    @app.get("/api/me")
    def me(a: Annotator = Depends(who)):
        return {"name": a.name, "max_ratio": store.max_ratio, "tokens": tokens is not None,
                "max_chars": max_chars, "progress": store.progress(a)}

    @app.get("/api/next")
    def next_item(a: Annotator = Depends(who)):
        item = store.next_item(a)  # never one ``a`` has annotated: no annotation to send
        return {"item": None if item is None else item.to_api(), "annotation": None, "progress": store.progress(a)}

    @app.get("/api/items/{item_id}")
    def get_item(item_id: int, a: Annotator = Depends(who)):
        item, ann = store.get_item(a, item_id)
        hist = [{k: h[k] for k in ("status", "worse", "decision", "edited", "flag", "at")}
                for h in store.submissions(a, item_id)]
        return {"item": item.to_api(), "annotation": ann, "history": hist, "progress": store.progress(a)}

    @app.get("/api/history")
    def history(limit: int = 20, a: Annotator = Depends(who)):
        return {"history": store.history(a, max(1, min(limit, 200)))}

    @app.post("/api/diff")
    def diff(body: DiffIn, a: Annotator = Depends(who)):
        check_len(body.edited)
        item, _ = store.get_item(a, body.item_id)
        return diff_payload(item.original_for(body.worse), body.edited, store.max_ratio, tokens=tokens,
                            prompt=item.prompt)

    @app.post("/api/submit")
    def submit(body: SubmitIn, a: Annotator = Depends(who)):
        check_len(body.edited)
        return {"ok": True, "annotation": store.submit(a, Submission(**body.model_dump()))}


def _handler(code: int):
    async def handle(request: Request, exc: Exception):
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handle
