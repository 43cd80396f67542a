"""A finealign scorer as a remote reward model for OpenRLHF (``--remote_rm_url``) and other engines.

``create_reward_app("sim:facts")`` (any scorer spec, or a loaded ``Scorer``) returns an ASGI app with

* ``POST /get_reward``: OpenRLHF's request ``{"query": [...], "prompts": [...], "labels": [...]}``, where
  each query is the prompt followed by the response as the policy's tokenizer decoded them (special
  tokens kept, so a stop marker such as ``<|im_end|>`` ends a response that stopped). The reply:
  ``{"rewards": [...], "scores": [...], "extra_logs": {...}, "token_rewards": [...]}``: one sequence
  reward per query (a token scorer's: the sum of its token rewards; OpenRLHF puts it on the
  end-of-sequence token), the same as ``scores``, per-query logs (``finealign_truncated``: 1.0 for a
  response without a stop marker), and, for engines that take them, per-token rewards in the
  character-span form of docs/token-rewards.md: ``{"offsets": [[start, end], ...], "rewards": [...],
  "stopped": bool}`` over the response text, the terminal reward on the zero-width unit ``[len, len]``.
* ``GET /health``: the scorer, how many requests wait, whether one runs, the queue's bound.

Robustness as ``finealign serve`` (``serve.worker``): one thread owns the scorer; at most ``max_queue``
requests wait (the next gets 503 ``queue_full`` with ``Retry-After``); requests that wait when the running
one starts are scored with it in one batch of up to ``batch_size`` queries; a request whose client goes
away while it waits is dropped; ``close_reward_app`` (SIGTERM / Ctrl-C) cancels all that wait. Bad input
gets 400 with a message and the server keeps serving: lists of different lengths, a query that does not
start with its prompt, a prompt over ``max_prompt_tokens`` (tokens of the scorer's tokenizer, characters
for a scorer without one), a record the scorer rejects (named by its index).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..errors import FinealignError
from ..integrations.token_rewards import score_records
from ..rewards.base import Scorer, TokenScorer, load_scorer
from .http_common import _ApiError, _outcome, served_app, submit_job
from .worker import Job, ModelWorker

__all__ = ["create_reward_app", "close_reward_app", "split_query", "STOP_MARKERS"]

DEFAULT_MAX_QUEUE = 64
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_PROMPT_TOKENS = 4096
# End-of-turn / end-of-sequence markers of common chat templates, as decoded text.
STOP_MARKERS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<eos>",
                "<|end|>", "<|eos|>")


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None


def split_query(query: str, prompt: str, stops: Sequence[str] = STOP_MARKERS) -> tuple[str, bool]:
    """(response text, whether it stopped) of an OpenRLHF query = prompt + response (+ stop marker, padding).

    Trailing stop markers are removed (one or more: a stop token followed by padding); the response
    stopped when at least one was there. Leading padding (stop or pad markers left of a left-padded batch)
    is removed from both the query and the prompt first. A query that does not start with its prompt raises
    ValueError.
    """
    query, prompt = _lstrip_markers(query, stops), _lstrip_markers(prompt, stops)
    if not query.startswith(prompt):
        raise ValueError("the query does not start with its prompt")
    resp, stopped = query[len(prompt):], False
    while True:
        for s in stops:
            if s and resp.endswith(s):
                resp, stopped = resp[: -len(s)], True
                break
        else:
            return resp, stopped


PAD_MARKERS = ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>")


def _lstrip_markers(text: str, stops: Sequence[str]) -> str:
    """``text`` without the stop / pad markers it starts with (left padding of a decoded batch)."""
    marks = [m for m in (*stops, *PAD_MARKERS) if m]
    while True:
        m = next((m for m in marks if text.startswith(m)), None)
        if m is None:
            return text
        text = text[len(m):]


class Scored(NamedTuple):
    total: float
    offsets: list[list[int]]
    rewards: list[float]


def _score(scorer: Scorer, prompts: list, responses: list[str], labels: list[str]) -> list[Scored]:
    tokens = isinstance(scorer, TokenScorer)
    out = score_records(scorer, prompts, responses, labels, tokens=tokens)
    res = []
    for r, o in zip(responses, out):
        if tokens:
            res.append(Scored(float(sum(o.rewards)), [[int(s), int(e)] for s, e in o.offsets],
                              [float(x) for x in o.rewards]))
        else:
            res.append(Scored(float(o), [[len(r), len(r)]], [float(o)]))
    return res


class _Served:
    def __init__(self, scorer: Scorer, name: str, max_queue: int, batch_size: int, max_prompt_tokens: int):
        self.scorer, self.name = scorer, name
        self.batch_size, self.max_prompt_tokens = batch_size, max_prompt_tokens
        self.worker = ModelWorker(max_queue, name="finealign-reward")
        self.tokenizer = getattr(scorer, "tokenizer", None)

    def length(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def run(self, job: Job) -> list[Scored]:
        """Score ``job`` and the waiting reward jobs taken with it (up to ``batch_size`` queries in all)."""
        room = max(self.batch_size - len(job.items), 0)

        def fits(j: Job) -> bool:
            nonlocal room
            n = len(getattr(j, "items", ()) or ())
            if not n or n > room:
                return False
            room -= n
            return True

        jobs = [job] + self.worker.take_waiting(self.batch_size, fits)
        try:
            results = self._score_items([it for j in jobs for it in j.items])
        except FinealignError:
            if len(jobs) == 1:
                raise
            results = None  # a bad record in one request: score each request alone, so only it fails
        pos = len(job.items)
        for j in jobs[1:]:
            if results is not None:
                j.emit("done", results[pos: pos + len(j.items)])
                self.worker.count_taken("completed")
            else:
                try:
                    j.emit("done", self._score_items(j.items))
                    self.worker.count_taken("completed")
                except FinealignError as e:
                    j.emit("error", e)
                    self.worker.count_taken("failed")
            pos += len(j.items)
        return results[: len(job.items)] if results is not None else self._score_items(job.items)

    def _score_items(self, items: list) -> list[Scored]:
        return _score(self.scorer, [p for p, _, _ in items], [r for _, r, _ in items], [lb for _, _, lb in items])


def _parse(served: _Served, req: RewardRequest) -> tuple[list, list[bool]]:
    """The request's items (prompt, response, label) and stop flags, or the 400 that refuses it."""
    n = len(req.query)
    if req.prompts is None:
        raise _ApiError(400, "prompts: missing; OpenRLHF sends the prompts next to the queries (query = prompt + "
                             "response)")
    if len(req.prompts) != n:
        raise _ApiError(400, f"query has {n} entries but prompts has {len(req.prompts)}: the lists must have the "
                             "same length")
    if req.labels is not None and len(req.labels) != n:
        raise _ApiError(400, f"query has {n} entries but labels has {len(req.labels)}: the lists must have the "
                             "same length")
    items, stopped = [], []
    for i, (q, p) in enumerate(zip(req.query, req.prompts)):
        try:
            resp, stop = split_query(q, p)
        except ValueError as e:
            raise _ApiError(400, f"query[{i}]: {e}") from None
        if not p.strip():
            raise _ApiError(400, f"prompts[{i}]: empty")
        items.append((p, resp, f"query[{i}]"))
        stopped.append(stop)
    return items, stopped


def close_reward_app(app) -> None:
    """Cancel every queued request of ``app`` and take no new ones (shutdown)."""
    app.state.served.worker.close()


def create_reward_app(spec: str | Scorer, *, max_queue: int = DEFAULT_MAX_QUEUE, batch_size: int = DEFAULT_BATCH_SIZE,
                      max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS, api_key: str | None = None):
    """The FastAPI app serving scorer ``spec`` as a remote reward model (see the module docstring)."""
    scorer = load_scorer(spec)
    name = spec if isinstance(spec, str) else getattr(scorer, "name", type(scorer).__name__)
    served = _Served(scorer, name, max_queue, batch_size, max_prompt_tokens)

    app, check_key = served_app("finealign reward server", served, api_key, "scorer")

    @app.post("/get_reward")
    async def get_reward(req: RewardRequest, request: Request):
        check_key(request)
        items, stopped = _parse(served, req)
        lengths = await run_in_threadpool(lambda: [served.length(p) for p, _, _ in items])
        for i, n in enumerate(lengths):
            if n > served.max_prompt_tokens:
                unit = "tokens" if served.tokenizer is not None else "characters"
                raise _ApiError(400, f"prompts[{i}] has {n} {unit}; this server takes at most {served.max_prompt_tokens} "
                                     "(--max-prompt-tokens)", code="context_length_exceeded")
        job = Job(served.run)
        job.items = items  # type: ignore[attr-defined]
        submit_job(served.worker, job)
        try:
            results = await _outcome(job, request)
        except FinealignError as e:
            raise _ApiError(400, str(e), code="scorer_rejected_record") from None
        totals = [r.total for r in results]
        return {"rewards": totals, "scores": totals,
                "extra_logs": {"finealign_truncated": [0.0 if s else 1.0 for s in stopped]},
                "token_rewards": [{"offsets": r.offsets, "rewards": r.rewards, "stopped": s}
                                  for r, s in zip(results, stopped)]}

    return app
