"""The client side of OpenAI-compatible endpoints, shared by the editors (``edits.editors``) and the judges
(``eval.judges``): base-URL checks, retry back-off (honouring ``Retry-After``) and the server's error message."""

from __future__ import annotations

import json
from urllib.parse import urlparse

from ..errors import FinealignError

__all__ = ["backoff_delay", "check_base_url", "error_message", "retry_after_seconds"]


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    Exponential: ``base * 2**attempt``, at most ``cap``; a server's ``Retry-After`` wins when
    given (also capped). Example: base 0.5, cap 8: 0.5, 1, 2, 4, 8, 8, ...
    """
    if retry_after is not None and retry_after >= 0:
        return min(cap, retry_after)
    return min(cap, base * (2 ** attempt))


def check_base_url(url: str) -> str:
    """``url`` without its trailing slash; FinealignError unless it is http(s)://host[:port]/..."""
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.netloc:
        raise FinealignError(f"--base-url: expected http(s)://host[:port]/v1, got {url!r}")
    return url.rstrip("/")


def retry_after_seconds(exc) -> float | None:
    """Seconds from an API error's ``Retry-After`` header (None when absent or unreadable)."""
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def error_message(e) -> str:
    """The server's own message of an API error (its JSON body's ``error.message`` when present)."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if "detail" in body:
            return json.dumps(body["detail"])[:300]
    return str(getattr(e, "message", "") or e)
