"""A local fake OpenAI-compatible judge endpoint with a known true preference and many reply styles.

Each answer text carries its quality as ``q=N``; the fake judge prefers the higher quality whichever order
it is shown in (no position bias), and calls equal qualities a tie. A *style* says how the reply is
written and tokenised, and whether the server sends log-probabilities: at the answer-letter token the
winner gets ``P_WIN`` (0.8) and the loser ``1 - P_WIN``; every other token offers A and B with the fixed
log-probabilities -3.0 / -3.5, so a judge that reads the first token of ``**B**`` gets the constant
``1 / (1 + e^-0.5) = 0.622`` whatever the verdict (the bug of issue 27).
"""

from __future__ import annotations

import math
import re
import threading

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

P_WIN = 0.8
TIE = "Both answers are equally good."


def _words(text: str) -> list[str]:
    """Split into tokens the way a BPE tokenizer roughly does: words with their leading space."""
    return re.findall(r"\s*\S+", text)


# style -> (reply for the winning letter L, tokens of that reply or None, send logprobs?)
STYLES: dict[str, tuple] = {
    "bare": (lambda L: L, lambda L: [L], True),
    "space": (lambda L: " " + L, lambda L: [" " + L], True),
    "bold": (lambda L: f"**{L}**", lambda L: ["**", L, "**"], True),
    "answer-colon": (lambda L: f"Answer: {L}", lambda L: ["Answer", ":", " " + L], True),
    "answer-dash": (lambda L: f"Answer - {L}", None, False),
    "paren": (lambda L: f"({L})", lambda L: ["(", L, ")"], True),
    "mt-bench": (lambda L: f"[[{L}]]", lambda L: ["[[", L, "]]"], True),
    "output-lower": (lambda L: f"Output ({L.lower()})", None, False),
    "response": (lambda L: f"Response {L}", lambda L: ["Response", " " + L], True),
    "json": (lambda L: '{"answer": "%s"}' % L, lambda L: ['{"', "answer", '":', ' "', L, '"}'], True),
    "reasoning": (lambda L: f"Answer A and Answer B differ in quality. Weighing both, the final answer: {L}",
                  lambda L: _words(f"Answer A and Answer B differ in quality. Weighing both, the final answer: {L}"),
                  True),
    "lower-logprobs": (lambda L: L.lower(), lambda L: [L.lower()], True),
    "no-top-logprobs": (lambda L: f"**{L}**", lambda L: ["**", L, "**"], "no-top"),
    "other-language": (lambda L: f"La respuesta {L} es mejor.", None, False),
    "rejects-logprobs": (lambda L: L, None, "reject"),
}


def _entry(tok: str, letter_at: str | None, winner: str | None) -> dict:
    if letter_at is not None:  # the answer-letter token: winner P_WIN, loser 1 - P_WIN, in the token's own casing
        lo = letter_at.islower()
        a, b = ("a", "b") if lo else ("A", "B")
        pa = P_WIN if winner == "A" else 1 - P_WIN
        pre = tok[: len(tok) - len(tok.lstrip())]
        tops = [{"token": pre + a, "logprob": math.log(pa), "bytes": None},
                {"token": pre + b, "logprob": math.log(1 - pa), "bytes": None}]
        lp = tops[0]["logprob"] if tok.strip() == a else tops[1]["logprob"]
    else:
        tops = [{"token": tok, "logprob": -0.05, "bytes": None}, {"token": "A", "logprob": -3.0, "bytes": None},
                {"token": "B", "logprob": -3.5, "bytes": None}]
        lp = -0.05
    return {"token": tok, "logprob": lp, "bytes": None, "top_logprobs": tops}


def reply(text: str, logprobs: dict | None, finish: str = "stop") -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                         "finish_reason": finish}]}


def quality(text: str) -> int:
    return int(re.search(r"q=(\d+)", text).group(1))


class FakeJudge:
    """The fake endpoint (``self.app``); ``style`` picks the reply style; ``fail`` scripts failures:
    ``"429"`` / ``"500"`` (every call), ``"empty"`` (an empty reply), ``"foreign"`` (a reply in another
    language without a letter), ``"fatal-and-500"`` (400 for an answer that says FATAL, else 500 without Retry-After), ``"cut"`` (a reply cut at max_tokens after "Answer A"). ``calls`` counts requests; ``bodies`` keeps the last request body."""

    def __init__(self, style: str = "bold"):
        self.style, self.fail, self.calls, self.bodies = style, None, 0, []
        self.lock = threading.Lock()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(req: Request):
            body = await req.json()
            with self.lock:
                self.calls += 1
                self.bodies.append(body)
            if self.fail in ("429", "500"):
                return JSONResponse({"error": {"message": "busy" if self.fail == "429" else "overloaded"}},
                                    status_code=int(self.fail), headers={"retry-after": "0"})
            if self.fail == "empty":
                return JSONResponse(reply("", None))
            if self.fail == "fatal-and-500":  # the pair whose answer says FATAL is refused (400); the rest: 500s
                if "FATAL" in body["messages"][-1]["content"]:
                    return JSONResponse({"error": {"message": "bad request"}}, status_code=400)
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
            if self.fail == "cut":  # a reasoning reply cut at max_tokens just after a mention of "Answer A"
                text = "Let me compare the two answers carefully. Answer A"
                toks = [{"token": t, "logprob": -0.05, "bytes": None,
                         "top_logprobs": [{"token": t, "logprob": -0.05, "bytes": None}]} for t in _words(text)]
                return JSONResponse(reply(text, {"content": toks}, finish="length"))
            if self.fail == "foreign":
                return JSONResponse(reply("Die erste Antwort ist besser.", None))
            out = self.answer(body)
            return out if isinstance(out, JSONResponse) else JSONResponse(out)

        self.app = app

    def answer(self, body: dict) -> dict | JSONResponse:
        make_text, make_tokens, lp_mode = STYLES[self.style]
        if lp_mode == "reject" and body.get("logprobs"):
            return JSONResponse({"error": {"message": "logprobs are not supported"}}, status_code=400)
        user = body["messages"][-1]["content"]
        first, second = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]\n(.*?)\n\nWhich answer", user, re.S).groups()
        qa, qb = quality(first), quality(second)
        if qa == qb:
            return reply(TIE, {"content": [_entry(t, None, None) for t in _words(TIE)]} if lp_mode else None)
        winner = "A" if qa > qb else "B"
        text = make_text(winner)
        if not lp_mode or lp_mode == "reject" or not body.get("logprobs"):
            return reply(text, None)
        toks = make_tokens(winner)
        assert "".join(toks) == text
        at = len(toks) - 1 - next(i for i, t in enumerate(reversed(toks)) if t.strip() in (winner, winner.lower()))
        content = [_entry(t, t.strip() if i == at else None, winner) for i, t in enumerate(toks)]
        if lp_mode == "no-top":
            for c in content:
                c["top_logprobs"] = []
        return reply(text, {"content": content})
