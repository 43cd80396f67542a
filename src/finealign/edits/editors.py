"""Editors: whatever turns (prompt, response) into a minimally edited response.

An ``Editor`` takes a batch of ``EditRequest`` and yields one ``EditResult`` per request, in any
order. A failed request (an error, a timeout, an empty reply, a text over the context window) is
a result with ``edited=None`` and a short ``reason``, never an exception, so a job can record
what it finished and count the rest. Only errors that would fail every request (a wrong API key,
an unknown model) raise ``EditorFatal``.

* ``LocalEditor("local model spec")``: a causal LM loaded in-process, greedy by default, batched
  through ``finealign.generation.generate_completions``.
* ``OpenAIEditor(model, base_url=...)``: any OpenAI-compatible chat endpoint through the
  ``openai`` client, with a concurrency limit, retries with exponential backoff on 429, 5xx,
  timeouts and connection errors (a ``Retry-After`` header is honoured, capped), and a per-request
  timeout. The key comes from ``FINEALIGN_EDITOR_API_KEY``, else ``OPENAI_API_KEY``.

``make_editor("local:SPEC" | "openai:MODEL", ...)`` builds either from a spec string.
"""

from __future__ import annotations

import abc
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..data.records import Prompt
from ..errors import FinealignError
from ..models.endpoint import backoff_delay, check_base_url, error_message, retry_after_seconds  # noqa: F401
from .template import DEFAULT_TEMPLATE, EditTemplate

__all__ = ["EditRequest", "EditResult", "Editor", "EditorFatal", "LocalEditor", "OpenAIEditor", "backoff_delay",
           "make_editor", "resolve_api_key"]

API_KEY_ENV = ("FINEALIGN_EDITOR_API_KEY", "OPENAI_API_KEY")


class EditorFatal(FinealignError):
    """An editor error that every further request would hit too (bad key, unknown model)."""


@dataclass(frozen=True)
class EditRequest:
    id: str
    prompt: Prompt
    original: str


@dataclass(frozen=True)
class EditResult:
    """``edited`` is the extracted edit, or None on failure with ``reason`` (``empty``, ``timeout``,
    ``connection``, ``http_429``, ``http_500``, ``context``, ``error``) and ``error`` (a message)."""

    id: str
    edited: str | None
    reason: str | None = None
    error: str | None = None
    attempts: int = 1
    raw: str | None = None
    finish_reason: str | None = None  # the editor's: "stop", or "length" when it hit the token limit

    @property
    def ok(self) -> bool:
        return self.edited is not None


class Editor(abc.ABC):
    """Turns requests into results; see the module docstring."""

    name: str = "editor"
    template: EditTemplate = DEFAULT_TEMPLATE
    #: how many requests the job should hand over at once (a local batch; the endpoint's queue)
    chunk_size: int = 8

    @abc.abstractmethod
    def edit(self, requests: Sequence[EditRequest]) -> Iterator[EditResult]:
        """One result per request, in any order, as they finish."""

    def close(self) -> None:
        pass

    def _result(self, req: EditRequest, raw: str | None, attempts: int = 1, finish: str | None = None) -> EditResult:
        text = self.template.extract(raw)
        if not text.strip():
            return EditResult(req.id, None, "empty", "the editor returned an empty reply", attempts, raw, finish)
        return EditResult(req.id, text, attempts=attempts, raw=raw, finish_reason=finish)


# --------------------------------------------------------------------------------- local model


class LocalEditor(Editor):
    """A local causal LM as editor (``model`` may be a spec or a loaded ``(model, tokenizer)``).

    The answer budget of a batch is ``1.5 x`` the longest original's tokens ``+ 32``, at most
    ``max_new_tokens``: a minimal edit is about as long as the original. A request whose rendered
    prompt plus that budget exceeds the model's context window fails with reason ``context``.
    """

    def __init__(self, model: str | tuple, *, template: EditTemplate = DEFAULT_TEMPLATE, temperature: float = 0.0,
                 top_p: float = 1.0, max_new_tokens: int = 512, batch_size: int = 4, seed: int = 0,
                 dtype: str = "float32", device: str = "auto"):
        if max_new_tokens < 1 or batch_size < 1:
            raise FinealignError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
        if isinstance(model, (tuple, list)):
            self.model, self.tokenizer = model
            self.name = "local:" + str(getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__)
        else:
            from ..models import load_model

            self.model, self.tokenizer = load_model(str(model), dtype=dtype, device=device)
            self.name = f"local:{model}"
        self.tokenizer.padding_side = "left"
        self.template = template
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.chunk_size = batch_size
        self.context = context_window(self.model)

    def _budget(self, originals: Sequence[str]) -> int:
        longest = max(len(self.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in originals)
        return max(1, min(self.max_new_tokens, int(1.5 * longest) + 32))

    def edit(self, requests: Sequence[EditRequest]) -> Iterator[EditResult]:
        from ..generation import generate_completions, render_prompt

        for start in range(0, len(requests), self.batch_size):
            chunk = list(requests[start : start + self.batch_size])
            budget = self._budget([r.original for r in chunk])
            msgs = {r.id: self.template.render(r.prompt, r.original) for r in chunk}
            runnable = []
            for r in chunk:
                n = len(self.tokenizer(render_prompt(self.tokenizer, msgs[r.id]), add_special_tokens=False)["input_ids"])
                if self.context is not None and n + budget > self.context:
                    yield EditResult(r.id, None, "context",
                                     f"prompt of {n} tokens + {budget} new tokens exceeds the context window "
                                     f"of {self.context} tokens")
                else:
                    runnable.append(r)
            if not runnable:
                continue
            try:
                comps = generate_completions(self.model, self.tokenizer, [msgs[r.id] for r in runnable], n=1,
                                             temperature=self.temperature, top_p=self.top_p, max_new_tokens=budget,
                                             seed=self.seed, batch_size=len(runnable),
                                             prompt_ids=[r.id for r in runnable])
            except (RuntimeError, ValueError) as e:  # e.g. out of memory: count, do not crash
                for r in runnable:
                    yield EditResult(r.id, None, "error", f"{type(e).__name__}: {e}")
                continue
            for r, row in zip(runnable, comps):
                yield self._result(r, row[0].text, finish=row[0].finish_reason)


def context_window(model) -> int | None:
    """The model's maximum sequence length, when its config states one."""
    cfg = getattr(getattr(model, "get_base_model", lambda: model)(), "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


# --------------------------------------------------------------------------------- OpenAI-compatible


def resolve_api_key(base_url: str | None) -> str:
    """The key from ``FINEALIGN_EDITOR_API_KEY`` or ``OPENAI_API_KEY``; a placeholder for a custom
    ``base_url`` (local servers usually need none); an error for OpenAI itself without a key."""
    for env in API_KEY_ENV:
        v = os.environ.get(env, "").strip()
        if v:
            return v
    if base_url:
        return "no-key"
    raise FinealignError("no API key for the OpenAI editor: set FINEALIGN_EDITOR_API_KEY or OPENAI_API_KEY "
                         "(or pass --base-url for a local OpenAI-compatible server)")


class OpenAIEditor(Editor):
    """An OpenAI-compatible chat endpoint as editor; see the module docstring.

    ``retries`` extra attempts per request after a retryable failure (429, 5xx, timeout,
    connection error), waiting ``backoff_delay(attempt, backoff, max_backoff)`` between them.
    400/413/422 fail the one request; 401/403/404 raise ``EditorFatal``.
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 template: EditTemplate = DEFAULT_TEMPLATE, concurrency: int = 4, retries: int = 4,
                 timeout: float = 60.0, backoff: float = 1.0, max_backoff: float = 30.0, temperature: float = 0.0,
                 max_tokens: int | None = 1024, seed: int | None = 0):
        import openai

        if not model or not model.strip():
            raise FinealignError("the OpenAI editor needs a model name: --editor openai:MODEL")
        if concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise FinealignError(f"need concurrency >= 1, retries >= 0, timeout > 0, backoff >= 0; got "
                                 f"{concurrency}, {retries}, {timeout}, {backoff}")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        if base_url:
            base_url = check_base_url(base_url)
        self.model = model
        self.base_url = base_url
        self.name = f"openai:{model}" + (f"@{base_url}" if base_url else "")
        self.template = template
        self.concurrency, self.retries, self.timeout = concurrency, retries, timeout
        self.backoff, self.max_backoff = backoff, max_backoff
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed
        self.chunk_size = concurrency * 4
        self._openai = openai
        self.client = openai.OpenAI(api_key=api_key or resolve_api_key(base_url), base_url=base_url,
                                    max_retries=0, timeout=timeout)
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()
        self.client.close()

    def _call(self, req: EditRequest) -> tuple[str | None, str | None]:
        kw = {}
        if self.max_tokens is not None:
            kw["max_tokens"] = self.max_tokens
        if self.seed is not None:
            kw["seed"] = self.seed
        resp = self.client.chat.completions.create(
            model=self.model, messages=self.template.render(req.prompt, req.original),
            temperature=self.temperature, timeout=self.timeout, **kw)
        if not resp.choices:
            return None, None
        return resp.choices[0].message.content, resp.choices[0].finish_reason

    def _one(self, req: EditRequest) -> EditResult:
        oa = self._openai
        reason, error = "error", ""
        for attempt in range(self.retries + 1):
            if self._stop.is_set():
                return EditResult(req.id, None, "cancelled", "the job stopped", attempt)
            retry_after = None
            try:
                content, finish = self._call(req)
                return self._result(req, content, attempt + 1, finish)
            except oa.APITimeoutError:
                reason, error = "timeout", f"no reply within {self.timeout:g} s"
            except oa.APIConnectionError as e:
                reason, error = "connection", f"cannot reach {self.base_url or 'the OpenAI API'}: {e}"
            except oa.APIStatusError as e:
                status = e.status_code
                msg = f"HTTP {status}: {error_message(e)}"
                if status in (401, 403):
                    raise EditorFatal(f"editor endpoint refused the API key ({msg}); check FINEALIGN_EDITOR_API_KEY "
                                      "or OPENAI_API_KEY") from None
                if status == 404:
                    raise EditorFatal(f"editor endpoint {self.base_url or 'OpenAI'}: {msg} (model {self.model!r}; "
                                      "is --base-url right and does the server serve this model?)") from None
                reason, error = f"http_{status}", msg
                if status != 429 and status < 500:
                    return EditResult(req.id, None, reason, error, attempt + 1)
                retry_after = retry_after_seconds(e)
            except oa.OpenAIError as e:  # malformed response and the like
                return EditResult(req.id, None, "error", f"{type(e).__name__}: {e}", attempt + 1)
            if attempt < self.retries and self._stop.wait(backoff_delay(attempt, self.backoff, self.max_backoff,
                                                                        retry_after)):
                return EditResult(req.id, None, "cancelled", "the job stopped", attempt + 1)
        return EditResult(req.id, None, reason, error + f" (after {self.retries + 1} attempts)", self.retries + 1)

    def edit(self, requests: Sequence[EditRequest]) -> Iterator[EditResult]:
        """Runs at most ``concurrency`` requests at a time; yields results as they finish."""
        self._stop.clear()
        pending = list(requests)[::-1]
        running: set[Future] = set()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="finealign-edit")
        try:
            while pending or running:
                while pending and len(running) < self.concurrency:
                    running.add(pool.submit(self._one, pending.pop()))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()  # EditorFatal propagates from here
        finally:
            if running:
                self._stop.set()  # stop retry loops; in-flight calls end by their timeout
            pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------- spec


def make_editor(spec: str, *, template: EditTemplate = DEFAULT_TEMPLATE, base_url: str | None = None,
                concurrency: int = 4, retries: int = 4, timeout: float = 60.0, backoff: float = 1.0,
                temperature: float = 0.0, max_new_tokens: int = 1024, batch_size: int = 4,
                dtype: str = "float32", device: str = "auto") -> Editor:
    """``local:MODEL_SPEC`` (any model spec ``load_model`` takes) or ``openai:MODEL``."""
    kind, sep, arg = (spec or "").partition(":")
    if not sep or not arg.strip() or kind not in ("local", "openai"):
        raise FinealignError(f"--editor: expected local:MODEL_SPEC or openai:MODEL, got {spec!r}")
    if kind == "local":
        if base_url:
            raise FinealignError("--base-url applies to openai:MODEL editors only")
        return LocalEditor(arg, template=template, temperature=temperature, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, dtype=dtype, device=device)
    return OpenAIEditor(arg, base_url=base_url, template=template, concurrency=concurrency, retries=retries,
                        timeout=timeout, backoff=backoff, temperature=temperature, max_tokens=max_new_tokens)
