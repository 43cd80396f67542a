"""Judges: which of two responses to one prompt is better, behind one interface.

A ``Judge`` answers ``compare(prompts, first, second) -> P(first is better)``, one float in [0, 1]
per pair. Three kinds, named by a spec string (``load_judge``):

* any scorer spec (``length``, ``direct:MODEL``, ``flr:MODEL``, ``token-rm:DIR``, ...): the higher score
  wins (1, 0, or 1/2 on equal scores). The verdict does not depend on the order (``symmetric``).
* ``pairwise:MODEL[,batch_size=4][,dtype=..][,device=..]``: a local causal LM reads the pairwise prompt
  below (its chat template, assistant turn opened) and the judge's probability is
  ``P(A) / (P(A) + P(B))`` over its next token (``A`` / `` A`` against ``B`` / `` B``).
* ``openai:URL,model=NAME[,timeout=60][,retries=4][,parse_retries=1][,concurrency=4][,logprobs=auto]
  [,max_tokens=16][,backoff=1]``: any OpenAI-compatible chat endpoint with the same prompt (temperature 0,
  no streaming). The reply is parsed (``verdicts.parse_verdict``: bare letters, ``(B)``, ``**B**``,
  ``[[B]]``, ``Answer: B``, ``Answer - A``, ``Output (b)``, ``Response B``, JSON, reasoning then a final
  answer; "both" / "neither" / refusals are explicit ties). With ``logprobs`` (``auto``: when the server
  returns them) the probability is read at the token that holds the answer letter
  (``verdicts.letter_probability``), not at the reply's first token; without them it is the parsed letter
  (``A`` -> 1, ``B`` -> 0). Each verdict records its path (``logprob`` / ``parsed`` / ``tie``). 429, 5xx,
  timeouts and connection errors are retried ``retries`` times with exponential backoff (a server's
  ``Retry-After`` wins), an empty or unparsable reply ``parse_retries`` times; then the judge raises one
  ``JudgeError`` naming the pair and the last problem. The key comes from ``FINEALIGN_JUDGE_API_KEY``,
  else ``OPENAI_API_KEY`` (none needed for a custom URL).

``judge_orders`` (``judge_orders.py``) shows every pair in both orders and caches each verdict with its
path, keyed by the judge's ``identity`` and the template's id (``template_id()``), so a rerun resumes, a
failure loses nothing done, and a verdict of another judge or template is never reused;
``finealign.core.winrate.combine_orders`` averages the two orders.

The pairwise prompt (``PAIRWISE_TEMPLATE``, version ``pairwise-v1``), as the user turn::

    Which of the two answers below is the better reply to the user's request? Judge helpfulness,
    correctness and clarity; ignore the order in which they are shown and do not favour length.
    Reply with one letter: A or B.

    [User request]
    {prompt}

    [Answer A]
    {first}

    [Answer B]
    {second}

    Which answer is better, A or B?

A multi-turn prompt is written as ``User: ... / Assistant: ...`` lines.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterator, Sequence

from ..data.records import Message, Prompt, as_messages
from ..errors import FinealignError
from ..rewards.inputs import TRANSPORT_OPTIONS, judge_key  # noqa: F401  (judge specs' identity, kept importable here)
from .judge_orders import OrderedVerdicts, VerdictCache, judge_both_orders, judge_orders, path_counts, verdict_key
from .verdicts import PATH_LOGPROB, PATH_PARSED, PATH_SCORE, PATH_TIE, Verdict, letter_probability, parse_answer, \
    parse_verdict

__all__ = ["PAIRWISE_TEMPLATE", "TEMPLATE_VERSION", "Judge", "JudgeError", "LocalPairwiseJudge", "OpenAIJudge",
           "OrderedVerdicts", "ScorerJudge", "Verdict", "VerdictCache", "judge_both_orders", "judge_orders",
           "judge_key", "load_judge", "pairwise_messages", "parse_answer", "parse_verdict", "path_counts", "template_id",
           "verdict_key"]

TEMPLATE_VERSION = "pairwise-v1"
PAIRWISE_TEMPLATE = (
    "Which of the two answers below is the better reply to the user's request? Judge helpfulness, "
    "correctness and clarity; ignore the order in which they are shown and do not favour length. "
    "Reply with one letter: A or B.\n\n"
    "[User request]\n{prompt}\n\n[Answer A]\n{first}\n\n[Answer B]\n{second}\n\n"
    "Which answer is better, A or B?"
)
SYSTEM_MESSAGE = "You are a fair and careful judge of AI assistant answers."
API_KEY_ENV = ("FINEALIGN_JUDGE_API_KEY", "OPENAI_API_KEY")


from .verdicts import JudgeError  # noqa: E402  (defined beside the verdicts: judge_orders raises it too)


def _prompt_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    msgs = as_messages(prompt)
    if len(msgs) == 1 and msgs[0]["role"] == "user":
        return msgs[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in msgs)


def _label(prompt: Prompt, n: int = 50) -> str:
    text = " ".join(_prompt_text(prompt).split())
    return "prompt " + repr(text if len(text) <= n else text[:n] + "...")


def pairwise_messages(prompt: Prompt, first: str, second: str) -> list[Message]:
    """The chat messages a pairwise judge reads: system message + ``PAIRWISE_TEMPLATE`` as the user turn."""
    return [{"role": "system", "content": SYSTEM_MESSAGE},
            {"role": "user", "content": PAIRWISE_TEMPLATE.format(prompt=_prompt_text(prompt), first=first,
                                                                 second=second)}]


def template_id() -> str:
    """The prompt template's id: ``TEMPLATE_VERSION`` and a hash of the system message and the template text
    (read at call time, so an edited template never reuses verdicts cached under the old one)."""
    h = hashlib.sha1(json.dumps([SYSTEM_MESSAGE, PAIRWISE_TEMPLATE]).encode("utf-8")).hexdigest()[:12]
    return f"{TEMPLATE_VERSION}:{h}"


class Judge(abc.ABC):
    """``compare(prompts, first, second)``: P(``first[i]`` is the better reply to ``prompts[i]``), each in [0, 1].

    ``verdicts_iter`` also says which path gave each verdict (``verdicts.PATHS``); ``identity`` names everything
    that determines a verdict (the verdict cache reuses a verdict only for the same identity).
    """

    name: str = "judge"
    #: True when the verdict cannot depend on the order (then one order is asked)
    symmetric: bool = False
    #: pairs per ``compare`` call that the caller should hand over
    batch_size: int = 8
    #: the path of every verdict of a judge with only one (``verdicts.PATHS``)
    path: str = PATH_SCORE

    @property
    def identity(self) -> str:
        """What determines this judge's verdicts (its name unless a subclass knows more)."""
        return self.name

    @property
    def template(self) -> str:
        """The prompt template's id (``template_id``): part of every cached verdict's key."""
        return template_id()

    @abc.abstractmethod
    def compare(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> list[float]:
        """One probability per pair."""

    def compare_iter(self, prompts: Sequence[Prompt], first: Sequence[str],
                     second: Sequence[str]) -> Iterator[tuple[int, float]]:
        """``(index, probability)`` as verdicts finish, in any order; a judge whose requests fail one by one
        yields every verdict it got before it raises, so the caller can keep them."""
        ps = self.compare(prompts, first, second)
        if len(ps) != len(prompts):
            raise JudgeError(f"judge {self.name!r} returned {len(ps)} verdicts for {len(prompts)} pairs")
        yield from enumerate(ps)

    def verdicts_iter(self, prompts: Sequence[Prompt], first: Sequence[str],
                      second: Sequence[str]) -> Iterator[tuple[int, Verdict]]:
        """``(index, Verdict(p, path))`` as verdicts finish (``compare_iter`` with this judge's ``path``)."""
        for i, p in self.compare_iter(prompts, first, second):
            yield i, Verdict(float(p), self.path)

    def close(self) -> None:
        pass


class ScorerJudge(Judge):
    """Any scorer as a judge: the higher score wins (1 / 0), equal scores tie (1/2).

    An empty (or whitespace) response loses to a non-empty one and ties with another empty one; it is
    never shown to the scorer (likelihood scorers cannot score no text).
    """

    symmetric = True

    def __init__(self, scorer, name: str, batch_size: int = 8):
        self.scorer, self.name, self.batch_size = scorer, name, batch_size

    def compare(self, prompts, first, second):
        texts = list(first) + list(second)
        ctx = list(prompts) + list(prompts)
        live = [i for i, t in enumerate(texts) if t.strip()]
        s = self.scorer.score([ctx[i] for i in live], [texts[i] for i in live]) if live else []
        if len(s) != len(live):
            raise JudgeError(f"scorer {self.name!r} returned {len(s)} scores for {len(live)} responses")
        score = [-math.inf] * len(texts)  # empty responses lose
        for i, v in zip(live, s):
            if not math.isfinite(v):
                raise JudgeError(f"scorer {self.name!r} returned a non-finite score ({v})")
            score[i] = float(v)
        n = len(prompts)
        return [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(score[:n], score[n:])]

    def close(self):
        self.scorer.close()


def _letter_ids(tokenizer, letter: str) -> list[int]:
    ids = set()
    for text in (letter, " " + letter):
        enc = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.add(int(enc[0]))
    if not ids:
        raise JudgeError(f"the judge's tokenizer has no single token for {letter!r}")
    return sorted(ids)


class LocalPairwiseJudge(Judge):
    """A local causal LM reading ``pairwise_messages``; P(first better) = P(A) / (P(A) + P(B)) at the next token.

    ``model``: a model spec or a loaded ``(model, tokenizer)``. Inputs are left-padded, ``batch_size`` per
    forward pass; the logits of the last position only are computed where the model allows it.
    """

    path = PATH_LOGPROB

    def __init__(self, model, *, batch_size: int = 4, dtype: str = "float32", device: str = "auto", name=None):
        if isinstance(model, (tuple, list)):
            self.model, self.tokenizer = model
        else:
            from ..models import load_model

            self.model, self.tokenizer = load_model(str(model), dtype=dtype, device=device)
        self.name = name or f"pairwise:{model if isinstance(model, str) else type(self.model).__name__}"
        self.batch_size = int(batch_size)
        self.a_ids, self.b_ids = _letter_ids(self.tokenizer, "A"), _letter_ids(self.tokenizer, "B")
        if set(self.a_ids) & set(self.b_ids):
            raise JudgeError("the judge's tokenizer maps 'A' and 'B' to a shared token")

    @property
    def identity(self) -> str:
        return f"{self.name}|template={template_id()}"

    def _texts(self, prompts, first, second) -> list[str]:
        from ..generation import render_prompt

        return [render_prompt(self.tokenizer, pairwise_messages(p, a, b)) for p, a, b in zip(prompts, first, second)]

    def compare(self, prompts, first, second):
        import torch

        from ..rewards.lm_common import model_max_length

        texts = self._texts(prompts, first, second)
        tok = self.tokenizer
        limit = model_max_length(self.model)
        for t, p in zip(texts, prompts):
            n = len(tok(t, add_special_tokens=False)["input_ids"])
            if n > limit:
                raise JudgeError(f"the pairwise prompt on {_label(p)} has {n} tokens, over the judge's window of "
                                 f"{limit}; cut the answers with --max-chars")
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        dev = next(self.model.parameters()).device
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = tok(texts[i:i + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(dev) for k, v in enc.items()}
            with torch.no_grad():
                try:
                    logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :]
                except TypeError:
                    logits = self.model(**enc).logits[:, -1, :]
            lp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
            la = torch.logsumexp(lp[:, self.a_ids], dim=-1)
            lb = torch.logsumexp(lp[:, self.b_ids], dim=-1)
            out.extend(torch.sigmoid(la - lb).tolist())  # P(A) / (P(A) + P(B))
        return out


def _resolve_key(base_url: str) -> str:
    for env in API_KEY_ENV:
        v = os.environ.get(env, "").strip()
        if v:
            return v
    return "no-key"


def _pair_label(prompt: Prompt, first: str, second: str) -> str:
    """The pair as an error message names it: the prompt and the heads of both answers."""
    def head(t: str, n: int = 30) -> str:
        t = " ".join(t.split())
        return repr(t if len(t) <= n else t[:n] + "...")
    return f"{_label(prompt)} (answer A {head(first)}, answer B {head(second)})"


def _pause(seconds: float, stop: threading.Event) -> None:
    """Wait ``seconds`` before a retry, or less when ``stop`` is set (another pair failed for good)."""
    stop.wait(seconds)


class _Stopped(Exception):
    """A pair not asked (or not retried) because another pair already failed fatally."""


class _Fatal(Exception):
    """A reply that no retry can change (a server without log-probabilities while ``logprobs=yes``)."""


class OpenAIJudge(Judge):
    """An OpenAI-compatible chat endpoint as judge; see the module docstring for the options.

    After one pair fails for good, no new request is started: the pending pairs are cancelled and the pairs in
    flight stop before their next attempt, so the run ends promptly with that one error (the verdicts that
    arrived are kept). A server that sends no log-probabilities while ``logprobs=yes`` fails on the first
    reply, without asking again.
    """

    def __init__(self, base_url: str, *, model: str | None = None, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 1.0, max_backoff: float = 30.0, concurrency: int = 4, logprobs: str = "auto",
                 max_tokens: int = 16, parse_retries: int = 1, api_key: str | None = None):
        import openai

        from ..models.endpoint import check_base_url

        if not model:
            raise JudgeError("the openai judge needs a model name: --judge openai:URL,model=NAME")
        if logprobs not in ("auto", "yes", "no"):
            raise JudgeError(f"judge option logprobs={logprobs!r}: expected auto, yes or no")
        if retries < 0 or parse_retries < 0 or timeout <= 0 or concurrency < 1 or backoff < 0 or max_tokens < 1:
            raise JudgeError("judge options: need retries >= 0, parse_retries >= 0, timeout > 0, concurrency >= 1, "
                             "backoff >= 0, max_tokens >= 1")
        try:
            self.base_url = check_base_url(base_url)
        except FinealignError:
            raise JudgeError(f"openai judge: expected openai:http(s)://host[:port]/v1,model=NAME, got URL "
                             f"{base_url!r}") from None
        self.model = model
        self.name = f"openai:{self.base_url},model={model}"
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.concurrency, self.logprobs, self.max_tokens = concurrency, logprobs, max_tokens
        self.parse_retries = parse_retries
        self._logprobs_spec = logprobs
        self.batch_size = concurrency * 4
        self._openai = openai
        self._stop = threading.Event()
        self.client = openai.OpenAI(api_key=api_key or _resolve_key(self.base_url), base_url=self.base_url,
                                    max_retries=0, timeout=timeout)

    @property
    def identity(self) -> str:
        return (f"{self.name},logprobs={self._logprobs_spec},max_tokens={self.max_tokens},temperature=0"
                f"|template={template_id()}")

    def close(self):
        self.client.close()

    def _ask(self, messages) -> tuple[Verdict | None, str]:
        """One request: the verdict, or None and why not (an empty or unparsable reply)."""
        kw = {"logprobs": True, "top_logprobs": 10} if self.logprobs != "no" else {}
        resp = self.client.chat.completions.create(model=self.model, messages=messages, temperature=0.0,
                                                   max_tokens=self.max_tokens, timeout=self.timeout, **kw)
        if not getattr(resp, "choices", None):
            return None, "a reply without choices"
        choice = resp.choices[0]
        text = (choice.message.content if choice.message is not None else None) or ""
        truncated = getattr(choice, "finish_reason", None) == "length"
        parsed = parse_verdict(text, truncated=truncated)
        if parsed.verdict == "tie":
            return Verdict(0.5, PATH_TIE), text
        if parsed.verdict is None:
            cut = (f"; the reply was cut at max_tokens={self.max_tokens} before an explicit final verdict: raise "
                   f"max_tokens" if truncated else "")
            if not text.strip():
                return None, "an empty reply" + cut
            return None, f"unparsable answer {text[:80]!r} ({parsed.why}{cut})"
        if self.logprobs != "no":
            content = getattr(getattr(choice, "logprobs", None), "content", None)
            p = letter_probability(content, text, parsed.span)
            if p is not None:
                return Verdict(p, PATH_LOGPROB), text
            if self.logprobs == "yes":  # at temperature 0 asking again gives the same reply: fail now
                what = "no log-probabilities" if not content else "no A/B log-probabilities at the answer letter"
                raise _Fatal(f"the server sent {what} with {text[:80]!r} (logprobs=yes; use logprobs=auto to read "
                             "the parsed answer instead)")
        return Verdict(1.0 if parsed.verdict == "A" else 0.0, PATH_PARSED), text

    def _one(self, label: str, messages) -> Verdict:
        """One ordered comparison: transport failures retried ``retries`` times with backoff, unparsable replies
        ``parse_retries`` times; then one ``JudgeError`` naming the pair and the last problem."""
        from ..models.endpoint import backoff_delay, error_message, retry_after_seconds

        oa = self._openai
        last, attempts, transport, parse = "", 0, 0, 0
        while True:
            if self._stop.is_set():
                raise _Stopped()
            attempts += 1
            retry_after, asked = None, self.logprobs
            try:
                v, why = self._ask(messages)
                if v is not None:
                    return v
                last = why
                if parse >= self.parse_retries:
                    break
                parse += 1
                continue
            except _Fatal as e:
                raise JudgeError(f"judge endpoint {self.base_url} (model {self.model!r}) failed on the pair on "
                                 f"{label}: {e}") from None
            except oa.APITimeoutError:
                last = f"no reply within {self.timeout:g} s"
            except oa.APIConnectionError as e:
                last = f"cannot reach {self.base_url}: {e}"
            except oa.APIStatusError as e:
                msg = f"HTTP {e.status_code}: {error_message(e)}"
                if e.status_code in (400, 422) and self._logprobs_spec == "auto" and asked != "no" \
                        and "logprob" in msg.lower():
                    self.logprobs = "no"  # a server without log-probabilities: parse the answer instead
                    attempts -= 1
                    continue
                if e.status_code < 500 and e.status_code != 429:
                    raise JudgeError(f"judge endpoint {self.base_url} (model {self.model!r}) refused the pair on "
                                     f"{label}: {msg}") from None
                last, retry_after = msg, retry_after_seconds(e)
            except oa.OpenAIError as e:
                last = f"{type(e).__name__}: {e}"
            if transport >= self.retries:
                break
            _pause(backoff_delay(transport, self.backoff, self.max_backoff, retry_after), self._stop)
            transport += 1
        raise JudgeError(f"judge endpoint {self.base_url} (model {self.model!r}) failed on the pair on {label} after "
                         f"{attempts} attempt{'s' if attempts != 1 else ''}: {last}")

    def compare(self, prompts, first, second):
        out = dict(self.compare_iter(prompts, first, second))
        return [out[i] for i in range(len(prompts))]

    def compare_iter(self, prompts, first, second):
        for i, v in self.verdicts_iter(prompts, first, second):
            yield i, v.p

    def verdicts_iter(self, prompts, first, second):
        msgs = [pairwise_messages(p, a, b) for p, a, b in zip(prompts, first, second)]
        error = None
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="finealign-judge")
        try:
            futures = {pool.submit(self._one, _pair_label(p, a, b), m): i
                       for i, (p, a, b, m) in enumerate(zip(prompts, first, second, msgs))}
            for f in as_completed(futures):
                if f.cancelled():  # cancelled after an earlier failure
                    continue
                try:
                    yield futures[f], f.result()
                except _Stopped:
                    continue
                except JudgeError as e:  # keep the verdicts that still arrive; raise the first failure after
                    if error is None:
                        error = e
                        self._stop.set()  # no new attempt in flight, no new pair started
                        for g in futures:
                            g.cancel()
        finally:
            self._stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self._stop.clear()
        if error is not None:
            raise error


def _opt(spec: str, options: dict, name: str, cast, default):
    if name not in options:
        return default
    try:
        return cast(options.pop(name))
    except (TypeError, ValueError):
        what = {int: "an integer", float: "a number"}.get(cast, f"a {cast.__name__}")
        raise JudgeError(f"judge {spec!r}: option {name} expects {what}") from None


def load_judge(spec: str, *, dtype: str = "float32", device: str = "auto", batch_size: int = 8) -> Judge:
    """A judge from its spec (``pairwise:MODEL``, ``openai:URL,model=NAME``, or any scorer spec).

    Raises ``JudgeError`` / ``FinealignError`` for an unknown kind or a bad option.
    """
    from ..rewards.base import load_scorer, parse_spec

    from ..rewards.base import _REGISTRY, _ensure_builtin_kinds

    keys = [o.partition("=")[0].strip() for o in spec.split(",")[1:]]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise JudgeError(f"judge {spec!r}: option {', '.join(twice)} given more than once")
    s = parse_spec(spec)
    opts = dict(s.options)
    _ensure_builtin_kinds()
    if s.kind not in ("pairwise", "openai") and s.kind not in _REGISTRY:
        raise JudgeError(f"unknown judge {spec!r}: kind {s.kind!r} is not pairwise, openai or a scorer kind "
                         f"({', '.join(sorted(_REGISTRY))})")
    if s.kind == "pairwise":
        if not s.arg:
            raise JudgeError("pairwise judge: expected pairwise:MODEL")
        j = LocalPairwiseJudge(s.arg, batch_size=_opt(spec, opts, "batch_size", int, min(batch_size, 4)),
                               dtype=opts.pop("dtype", dtype), device=opts.pop("device", device), name=spec)
    elif s.kind == "openai":
        if not s.arg:
            raise JudgeError("openai judge: expected openai:URL,model=NAME")
        j = OpenAIJudge(s.arg, model=opts.pop("model", None), timeout=_opt(spec, opts, "timeout", float, 60.0),
                        retries=_opt(spec, opts, "retries", int, 4), backoff=_opt(spec, opts, "backoff", float, 1.0),
                        concurrency=_opt(spec, opts, "concurrency", int, 4),
                        logprobs=opts.pop("logprobs", "auto"), max_tokens=_opt(spec, opts, "max_tokens", int, 16),
                        parse_retries=_opt(spec, opts, "parse_retries", int, 1))
    else:
        return ScorerJudge(load_scorer(spec), spec, batch_size=batch_size)
    if opts:
        raise JudgeError(f"judge {spec!r}: unknown option(s) {', '.join(sorted(opts))}")
    return j
