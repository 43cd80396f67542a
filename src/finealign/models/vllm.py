"""vLLM behind an import check: the engine, the requests finealign sends, the parsing of its outputs.

vLLM's offline API: ``vllm.LLM(model=..., enable_prefix_caching=True)``, then
``llm.generate(prompts, sampling_params, use_tqdm=False)`` with one token-id prompt per request
(``{"prompt_token_ids": [...]}``, vLLM's ``TokensPrompt``) and one ``SamplingParams`` per request;
it returns one ``RequestOutput`` per prompt, in order:

* ``prompt_token_ids``: the prompt's T token ids;
* ``prompt_logprobs`` (requested with ``prompt_logprobs=k``): a list of T entries, entry 0 ``None``
  (the first token has no prediction), entry j a dict ``{token id: Logprob(logprob, rank,
  decoded_token)}`` holding the prompt's own token j (log p(t_j | t_<j)) plus the k most likely;
* ``outputs``: ``CompletionOutput`` per sample: ``index``, ``text``, ``token_ids``,
  ``cumulative_logprob``, ``logprobs``, ``finish_reason`` (``"stop"`` | ``"length"`` | ...),
  ``stop_reason``.

The request builders and parsers here are pure functions over those structures (duck-typed: objects
or the dicts of a recorded response), tested against recorded outputs without vLLM installed.
Speed note: vLLM's V1 engine does not *read* its prefix cache for a request that asks for prompt
log-probabilities (the cached blocks hold no logits), so every follow-up of an FLR score is a full
prefill there; the prefix cache serves generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import FinealignError

INSTALL_HINT = ("--backend vllm needs vLLM, which is not installed: pip install vllm "
                "(Linux with a CUDA GPU; see https://docs.vllm.ai/en/latest/getting_started/installation/)")


def require_vllm():
    """The ``vllm`` module; ``FinealignError`` saying what to install when it is missing."""
    try:
        import vllm
    except ImportError:
        raise FinealignError(INSTALL_HINT) from None
    return vllm


def load_vllm(spec: str, *, dtype: str = "auto", seed: int = 0, **engine_args):
    """``vllm.LLM`` for a finealign model spec (built-in name, .gguf, local directory, hub id), with
    prefix caching on. ``engine_args`` go to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``)."""
    from .loading import resolve_spec

    vllm = require_vllm()
    return vllm.LLM(model=resolve_spec(spec), dtype=dtype, seed=seed, enable_prefix_caching=True, **engine_args)


# ----------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """One vLLM request: ``prompt`` (token ids) and the ``SamplingParams`` keyword arguments."""

    prompt_token_ids: tuple[int, ...]
    params: dict = field(default_factory=dict)

    def prompt(self) -> dict:
        return {"prompt_token_ids": list(self.prompt_token_ids)}


def sample_request(prompt_ids: Sequence[int], *, seed: int, temperature: float, top_p: float, max_new_tokens: int,
                   stop_token_ids: Sequence[int], min_new_tokens: int = 0) -> Request:
    """One completion of one prompt, with its own ``seed`` (finealign's per-row seed, so a row does
    not depend on its batch). ``temperature`` 0 is greedy (vLLM ignores ``top_p`` and the seed then)."""
    params = {"n": 1, "temperature": float(temperature), "top_p": float(top_p) if temperature > 0 else 1.0,
              "max_tokens": int(max_new_tokens), "min_tokens": int(min_new_tokens),
              "stop_token_ids": sorted(int(t) for t in stop_token_ids), "skip_special_tokens": True}
    if temperature > 0:
        params["seed"] = int(seed)
    return Request(tuple(int(t) for t in prompt_ids), params)


def logprob_request(token_ids: Sequence[int]) -> Request:
    """Read log p(t_j | t_<j) of every token of ``token_ids`` (one forward pass; one throwaway
    generated token, as vLLM needs ``max_tokens >= 1``)."""
    return Request(tuple(int(t) for t in token_ids),
                   {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0, "detokenize": False})


def sampling_params(request: Request):
    """``vllm.SamplingParams`` of a request (needs vLLM)."""
    return require_vllm().SamplingParams(**request.params)


def run_requests(llm, requests: Sequence[Request]) -> list:
    """Send ``requests`` to ``llm`` (a ``vllm.LLM`` or anything with its ``generate``) in one call;
    one output per request, in order."""
    outs = llm.generate([r.prompt() for r in requests], [sampling_params(r) for r in requests], use_tqdm=False)
    if len(outs) != len(requests):
        raise FinealignError(f"vLLM returned {len(outs)} outputs for {len(requests)} requests")
    return list(outs)


# ----------------------------------------------------------------------------------------- parsing


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def parse_completion(output: Any, stop_token_ids: Sequence[int] = ()) -> tuple[str, str, int]:
    """``(text, finish_reason, n_tokens)`` of the first sample of a ``RequestOutput``.

    ``finish_reason`` is finealign's: ``length`` when vLLM stopped at ``max_tokens``, else ``stop``;
    ``n_tokens`` counts the generated tokens without a final stop token (vLLM keeps it in
    ``token_ids``). Raises ``FinealignError`` for an output without samples or not finished.
    """
    outs = _get(output, "outputs") or []
    if not outs:
        raise FinealignError(f"vLLM output {_get(output, 'request_id')!r} has no completion")
    c = outs[0]
    reason = _get(c, "finish_reason")
    if reason is None:
        raise FinealignError(f"vLLM output {_get(output, 'request_id')!r} is not finished")
    ids = list(_get(c, "token_ids") or [])
    if reason != "length" and ids and ids[-1] in set(stop_token_ids):
        ids = ids[:-1]
    return str(_get(c, "text") or ""), "length" if reason == "length" else "stop", len(ids)


def _logprob_value(entry: Any) -> float:
    v = _get(entry, "logprob", entry)
    return float(v)


def parse_prompt_logprobs(output: Any, positions: Sequence[int]) -> list[float]:
    """log p(t_j | t_<j) of the prompt's own token at each of ``positions`` (j >= 1).

    Reads ``prompt_logprobs[j][prompt_token_ids[j]]``; the entry may also hold other (top-k) tokens,
    which are ignored. Raises ``FinealignError`` when a position has no entry or lacks its token.
    """
    ids = list(_get(output, "prompt_token_ids") or [])
    lps = _get(output, "prompt_logprobs")
    if lps is None:
        raise FinealignError("vLLM output has no prompt_logprobs (request them with prompt_logprobs=0)")
    out = []
    for j in positions:
        if not 1 <= j < len(ids) or j >= len(lps) or lps[j] is None:
            raise FinealignError(f"vLLM prompt_logprobs has no entry for position {j} of {len(ids)}")
        entry = lps[j]
        tok = ids[j]
        hit = entry.get(tok, entry.get(str(tok))) if isinstance(entry, dict) else None
        if hit is None:
            raise FinealignError(f"vLLM prompt_logprobs[{j}] lacks the prompt's token {tok}")
        out.append(_logprob_value(hit))
    return out
