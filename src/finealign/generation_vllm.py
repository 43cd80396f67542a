"""``finealign generate --backend vllm``: the same output file as ``generation.generate_file``, sampled
by vLLM (where installed: Linux with a CUDA GPU).

Every (prompt, sample) row is one vLLM request with its own seed (``core.sampling.row_seed``, the
transformers backend's seed of that row), so a row does not depend on its batch and a resumed run
computes what an uninterrupted run computes. The records are ``generate_file``'s, plus
``meta.backend = "vllm"``. Greedy decoding (``--temperature 0``) gives the transformers backend's text
up to kernel-level ties; sampled rows follow the same distribution but are other draws (vLLM's
sampler consumes its random numbers differently), so they are not the transformers backend's text.
vLLM schedules its own batches; the rows still to write of ``ROWS_PER_CALL // k`` prompts go to it per
call (and are appended, so an interrupted run loses at most one call's work). The file, its manifest,
resuming and progress are the generate job's (``generate_job.run_generate_job``), as for every backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .core.sampling import row_seed
from .data.prompts import PromptItem
from .generate_job import Chunk, Completion, Produced, Pulse, Row, Sampling
from .models.vllm import Request, parse_completion, run_requests, sample_request

ROWS_PER_CALL = 512


def generation_requests(items: Sequence[PromptItem], prompt_ids: Sequence[Sequence[int]],
                        rows: Sequence[tuple[int, int]],
                        *, seed: int, temperature: float, top_p: float, max_new_tokens: int,
                        stop_token_ids: Sequence[int]) -> list[Request]:
    """One request per row ``(prompt index, sample)``: the rendered prompt's token ids and the row's seed."""
    return [sample_request(prompt_ids[i], seed=row_seed(seed, items[i].id, s), temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, stop_token_ids=stop_token_ids) for i, s in rows]


def _completion(output, stop_token_ids: Sequence[int]) -> Completion:
    text, reason, n = parse_completion(output, stop_token_ids)
    return Completion(text, reason, n)


def response_record(item: PromptItem, sample: int, output, model: str, stop_token_ids: Sequence[int]) -> dict:
    """``generate_file``'s record for one parsed vLLM output (``meta.backend``: ``vllm``)."""
    from .generate_job import GENERATE, Row

    return GENERATE.line(GENERATE.rid(item.id, sample), Row(item, sample, _completion(output, stop_token_ids)), model,
                         {"backend": "vllm"})


class _GenConfigOnly:
    def __init__(self, generation_config):
        self.generation_config = generation_config


class VllmBackend:
    """The vLLM backend of the generate job (``generate_job.run_generate_job``): one request per row still to
    write, ``ROWS_PER_CALL`` rows (whole prompts) per call. ``llm`` / ``tokenizer``: an engine and tokenizer to
    use instead of loading ``model`` (tests pass a recorded engine)."""

    name = "vllm"

    def __init__(self, model: str, *, sampling: Sampling, dtype: str = "auto", llm=None, tokenizer=None):
        self.fingerprint_model = self.model_name = model
        self.sampling, self.dtype, self.llm, self.tokenizer = sampling, dtype, llm, tokenizer
        self.rows_per_chunk = ROWS_PER_CALL
        self.meta = {"backend": "vllm"}

    def __enter__(self) -> "VllmBackend":
        if self.llm is None:
            from .models.vllm import require_vllm

            require_vllm()  # says what to install before anything is written
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _load(self) -> None:
        if self.llm is None:
            from .models.vllm import load_vllm

            self.llm = load_vllm(self.fingerprint_model, dtype=self.dtype, seed=self.sampling.seed)
        if self.tokenizer is None:
            from .models.loading import load_tokenizer

            self.tokenizer = load_tokenizer(self.fingerprint_model)

    def produce(self, chunks: Sequence[Chunk], pulse: Pulse | None) -> Iterator[Produced]:
        """One ``Produced`` per chunk: the rows still to write, each one vLLM request with its own seed."""
        if not chunks:
            return
        from .generation import render_prompt, stop_token_ids

        self._load()
        stops = stop_token_ids(_GenConfigOnly(_generation_config(self.fingerprint_model)), self.tokenizer)
        s = self.sampling
        for chunk in chunks:
            t0 = time.perf_counter()
            texts = [render_prompt(self.tokenizer, p.prompt) for p in chunk.items]
            ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            index = {p.id: i for i, p in enumerate(chunk.items)}
            part = [(index[p.id], j) for p, j in chunk.todo]
            reqs = generation_requests(chunk.items, ids, part, seed=s.seed, temperature=s.temperature, top_p=s.top_p,
                                       max_new_tokens=s.max_new_tokens, stop_token_ids=stops)
            outs = run_requests(self.llm, reqs)
            rows = [Row(chunk.items[i], j, _completion(o, stops)) for (i, j), o in zip(part, outs)]
            yield Produced(rows, sum(r.completion.n_tokens for r in rows), time.perf_counter() - t0)


def vllm_generate_file(model: str, prompts_path: str | Path, out_path: str | Path, *, k: int = 4,
                       temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 256, seed: int = 0,
                       dtype: str = "auto", llm=None, tokenizer=None,
                       on_progress: Callable[[int, int, str], None] | None = None, overwrite: bool = False):
    """Sample ``k`` completions per prompt with vLLM into ``out_path`` (resumable); ``GenerateStats``: the
    generate job (``generate_job.run_generate_job``) with ``VllmBackend``.

    ``llm`` / ``tokenizer``: an engine and tokenizer to use instead of loading ``model`` (tests pass a
    recorded engine). Raises ``FinealignError`` saying what to install when vLLM is missing.
    """
    from .generate_job import run_generate_job

    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    backend = VllmBackend(model, sampling=sampling, dtype=dtype, llm=llm, tokenizer=tokenizer)
    return run_generate_job(backend, prompts_path, out_path, k=k, sampling=sampling, overwrite=overwrite,
                            on_progress=on_progress)


def _generation_config(model: str):
    """The model's ``GenerationConfig`` (its EOS ids), or None when it has none."""
    from transformers import GenerationConfig

    from .models.loading import resolve_spec

    try:
        return GenerationConfig.from_pretrained(resolve_spec(model))
    except (OSError, ValueError):
        return None
