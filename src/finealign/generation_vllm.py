"""``finealign generate --backend vllm``: the same output file as ``generation.generate_file``, sampled
by vLLM (where installed: Linux with a CUDA GPU).

Every (prompt, sample) row is one vLLM request with its own seed (``core.sampling.row_seed``, the
transformers backend's seed of that row), so a row does not depend on its batch and a resumed run
computes what an uninterrupted run computes. The records are ``generate_file``'s, plus
``meta.backend = "vllm"``. Greedy decoding (``--temperature 0``) gives the transformers backend's text
up to kernel-level ties; sampled rows follow the same distribution but are other draws (vLLM's
sampler consumes its random numbers differently), so they are not the transformers backend's text.
vLLM schedules its own batches; ``ROWS_PER_CALL`` rows go to it per call (and are appended, so an
interrupted run loses at most one call's work).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .core.sampling import row_seed
from .data.prompts import PromptItem, read_prompts
from .errors import FinealignError
from .models.vllm import Request, parse_completion, run_requests, sample_request

ROWS_PER_CALL = 512


def generation_requests(items: Sequence[PromptItem], prompt_ids: Sequence[Sequence[int]],
                        rows: Sequence[tuple[int, int]],
                        *, seed: int, temperature: float, top_p: float, max_new_tokens: int,
                        stop_token_ids: Sequence[int]) -> list[Request]:
    """One request per row ``(prompt index, sample)``: the rendered prompt's token ids and the row's seed."""
    return [sample_request(prompt_ids[i], seed=row_seed(seed, items[i].id, s), temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids) for i, s in rows]


def response_record(item: PromptItem, sample: int, output, model: str, stop_token_ids: Sequence[int]) -> dict:
    """``generate_file``'s record for one parsed vLLM output (``meta.backend``: ``vllm``)."""
    text, reason, n = parse_completion(output, stop_token_ids)
    return {"id": f"{item.id}:{sample}", "prompt_id": item.id, "sample": sample, "prompt": item.prompt,
            "completion": text, "meta": {"model": model, "finish_reason": reason, "n_tokens": n, "backend": "vllm"}}


class _GenConfigOnly:
    def __init__(self, generation_config):
        self.generation_config = generation_config


def vllm_generate_file(model: str, prompts_path: str | Path, out_path: str | Path, *, k: int = 4,
                       temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 256, seed: int = 0,
                       dtype: str = "auto", llm=None, tokenizer=None,
                       on_progress: Callable[[int, int, str], None] | None = None, overwrite: bool = False):
    """Sample ``k`` completions per prompt with vLLM into ``out_path`` (resumable); ``GenerateStats``.

    ``llm`` / ``tokenizer``: an engine and tokenizer to use instead of loading ``model`` (tests pass a
    recorded engine). Raises ``FinealignError`` saying what to install when vLLM is missing.
    """
    from .data.io import JsonlAppender
    from .generation import (FINISH_LENGTH, GenerateStats, _check_sampling, render_prompt, stop_token_ids,
                             tie_generate_output)

    _check_sampling(temperature, top_p, max_new_tokens, None)
    if k < 1:
        raise FinealignError(f"k must be >= 1, got {k}")
    items = read_prompts(prompts_path)
    out_path = Path(out_path)
    if out_path.exists() and out_path.resolve() == Path(prompts_path).resolve():
        raise FinealignError(f"{out_path}: the output file must differ from the prompts file")
    if llm is None:
        from .models.vllm import require_vllm

        require_vllm()  # says what to install before anything is written
    tie_generate_output(out_path, model, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        seed=seed, dtype=dtype, backend="vllm", overwrite=overwrite)  # data.manifest
    if llm is None:
        from .models.vllm import load_vllm

        llm = load_vllm(model, dtype=dtype, seed=seed)
    if tokenizer is None:
        from .models.loading import load_tokenizer

        tokenizer = load_tokenizer(model)
    stops = stop_token_ids(_GenConfigOnly(_generation_config(model)), tokenizer)
    texts = [render_prompt(tokenizer, p.prompt) for p in items]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    total, written, empty, truncated, new_tokens, seconds = len(items) * k, 0, 0, 0, 0, 0.0
    with JsonlAppender(out_path, key=lambda o: o["id"]) as app:
        rows = [(i, s) for i, p in enumerate(items) for s in range(k) if f"{p.id}:{s}" not in app]
        skipped = total - len(rows)
        if on_progress:
            on_progress(skipped, total, "")
        for start in range(0, len(rows), ROWS_PER_CALL):
            part = rows[start: start + ROWS_PER_CALL]
            t0 = time.perf_counter()
            reqs = generation_requests(items, ids, part, seed=seed, temperature=temperature, top_p=top_p,
                                       max_new_tokens=max_new_tokens, stop_token_ids=stops)
            outs = run_requests(llm, reqs)
            seconds += time.perf_counter() - t0
            for (i, s), o in zip(part, outs):
                rec = response_record(items[i], s, o, model, stops)
                app.append(rec)
                written += 1
                empty += not rec["completion"].strip()
                truncated += rec["meta"]["finish_reason"] == FINISH_LENGTH
                new_tokens += rec["meta"]["n_tokens"]
            if on_progress:
                on_progress(skipped + written, total, f"{new_tokens / max(seconds, 1e-9):.1f} tok/s")
    return GenerateStats(prompts=len(items), responses_written=written, skipped=skipped, empty=empty,
                         truncated=truncated, new_tokens=new_tokens, seconds=seconds)


def _generation_config(model: str):
    """The model's ``GenerationConfig`` (its EOS ids), or None when it has none."""
    from transformers import GenerationConfig

    from .models.loading import resolve_spec

    try:
        return GenerationConfig.from_pretrained(resolve_spec(model))
    except (OSError, ValueError):
        return None
