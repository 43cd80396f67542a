"""Sampling completions from a causal LM: batched, left-padded, reproducible, resumable.

Two entry points:

* ``generate_batch(model, tokenizer, prompts, n=...)``: ``n`` completions per prompt, in memory.
* ``generate_file(spec, prompts_path, out_path, k=...)``: reads a prompt-bearing file, appends one
  ``ResponseRecord`` line per (prompt, sample) to ``out_path``, and resumes on rerun: the one generate
  job (``generate_job.run_generate_job``, which also runs vLLM, the engines and eval winrate's answers)
  with this module's ``TransformersBackend``.

Every sampled row owns a ``torch.Generator`` seeded from ``(seed, prompt id, sample index)``, and
sampling is an inverse-CDF draw of one uniform number per row and step, so a row's completion does
not depend on which other rows share its batch. ``generate_file`` also cuts the prompt list into
fixed chunks (``max(1, batch_size // k)`` consecutive prompts) and always regenerates a whole chunk,
so a resumed run computes exactly what an uninterrupted run computes and its output file is
identical.

The decoding loop is our own (not ``model.generate``) so that per-row generators, finish reasons,
token counts and ``min_new_tokens`` are exact; it runs any Hugging Face causal LM (and PEFT
models) with a key/value cache. Notation: B rows, T tokens, V vocabulary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from .core.sampling import inverse_cdf_sample, next_tokens, row_seed, top_p_filter
from .data.prompts import PromptItem, read_prompts
from .data import chat
from .data.records import Prompt
from .errors import FinealignError
from .generate_job import (FINISH_LENGTH, FINISH_STOP, HEARTBEAT_S, Chunk, Completion, GenerateStats, Produced,
                           Pulse, Row, Sampling, check_sampling, checked_generate_inputs, tie_generate_output)

__all__ = ["FINISH_LENGTH", "FINISH_STOP", "Completion", "GenerateStats", "PromptItem", "decode_rows",
           "decode_steps", "generate_batch", "generate_completions", "generate_file", "inverse_cdf_sample",
           "read_prompts", "render_prompt", "row_seed", "stop_token_ids", "tie_generate_output", "top_p_filter",
           "TransformersBackend", "checked_generate_inputs", "HEARTBEAT_S"]

ProgressFn = Callable[[int, int, str], None]  # on_progress(done, total, info)


# --------------------------------------------------------------------------- decoding loop


def stop_token_ids(model, tokenizer) -> list[int]:
    """EOS ids of the generation config and the tokenizer (ChatML's ``<|im_end|>`` included)."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in (eos if isinstance(eos, (list, tuple)) else [eos]):
        if e is not None:
            ids.add(int(e))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if im_end is not None:
        ids.add(int(im_end))
    return sorted(ids)


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The prompt as model input text: ``data.chat.render_prompt`` (the chat template with the
    assistant turn opened; a prompt that already carries the template is used as it is)."""
    return chat.render_prompt(tokenizer, prompt)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    fwd = getattr(model, "get_base_model", lambda: model)().forward
    try:
        return "logits_to_keep" in inspect.signature(fwd).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()  # torch re-enters no_grad on every resume of a generator function
def decode_steps(
    model,
    tokenizer,
    texts: Sequence[str],
    seeds: Sequence[int] | None,
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    min_new_tokens: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The decoding loop: one left-padded batch of B rendered prompts, decoded with a key/value cache.

    Yields, once per step, ``(next_ids, active)``: (B,) long token ids and (B,) bool, True for the
    rows that had not produced a stop token before this step. ``seeds`` gives each row its own
    ``torch.Generator`` (one uniform draw per row and step, see ``core.sampling.next_tokens``);
    ``seeds=None`` decodes greedily. Stop tokens are masked out for the first ``min_new_tokens``
    steps. The loop ends after ``max_new_tokens`` steps or once every row has stopped (the caller
    may also stop iterating early). Raises ``FinealignError`` for a
    batch of several rows whose tokenizer does not pad on the left.
    """
    if len(texts) > 1 and tokenizer.padding_side != "left":
        raise FinealignError("generation needs a tokenizer with padding_side='left'")
    from transformers import DynamicCache

    from .models.compat import cache_kwargs

    dev = _model_device(model)
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc["attention_mask"].to(dev)  # (B, T)
    B = mask.shape[0]
    stops = torch.tensor(stop_token_ids(model, tokenizer), device=dev, dtype=torch.long)
    gens = None if seeds is None else [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    cache = DynamicCache()
    step_ids = enc["input_ids"].to(dev)  # (B, T)
    step_pos = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    stopped = torch.zeros(B, dtype=torch.bool, device=dev)
    for t in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True,
                    **cache_kwargs(model, cache), **extra)  # the cache is updated in place
        logits = out.logits[:, -1, :].float()  # (B, V)
        if t < min_new_tokens and len(stops):
            logits[:, stops] = float("-inf")
        u = None if gens is None else torch.stack([torch.rand((), generator=g, device=dev) for g in gens])
        nxt = next_tokens(logits, u, temperature=temperature, top_p=top_p)  # (B,)
        yield nxt, ~stopped
        stopped = stopped | torch.isin(nxt, stops)
        if bool(stopped.all()):
            return
        step_ids = nxt.unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=dev)], dim=-1)


def decode_rows(
    model,
    tokenizer,
    texts: Sequence[str],
    seeds: Sequence[int],
    *,
    do_sample: bool,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> list[Completion]:
    """Decode one left-padded batch of B rendered prompts (one row each) with a key/value cache.

    ``seeds`` gives each row its own generator (ignored under greedy decoding). A row stops at its
    first stop token (not part of the text) or after ``max_new_tokens``; stop tokens are masked
    out for the first ``min_new_tokens`` steps. ``on_step(n)`` is called with the number of rows
    that produced a token in each step. Raises ``FinealignError`` unless the tokenizer pads on the left.
    """
    if tokenizer.padding_side != "left":
        raise FinealignError("generation needs a tokenizer with padding_side='left'")
    B = len(texts)
    stops = torch.tensor(stop_token_ids(model, tokenizer), dtype=torch.long)
    steps: list[torch.Tensor] = []
    lengths = [max_new_tokens] * B
    stopped = [False] * B
    for t, (nxt, active) in enumerate(decode_steps(
            model, tokenizer, texts, seeds if do_sample else None, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)):
        nxt, active = nxt.cpu(), active.cpu()
        steps.append(nxt)
        for i in (torch.isin(nxt, stops) & active).nonzero().flatten().tolist():
            lengths[i], stopped[i] = t, True
        if on_step is not None:
            on_step(int(active.sum()))
    out_tokens = torch.stack(steps, dim=1) if steps else torch.zeros((B, 0), dtype=torch.long)  # (B, steps)
    result = []
    for i in range(B):
        toks = out_tokens[i, : lengths[i]].tolist()
        text = tokenizer.decode(toks, skip_special_tokens=True)
        result.append(Completion(text, FINISH_STOP if stopped[i] else FINISH_LENGTH, len(toks)))
    return result


def fit_prompts(model, tokenizer, prompts: Sequence[Prompt], max_new_tokens: int) -> list:
    """Each prompt fitted to the model's window minus ``max_new_tokens``, the oldest context cut first
    (``models.window.fit_prompt``; docs/long-inputs.md). Returns ``models.window.Fitted`` per prompt.
    Raises ``FinealignError`` when ``max_new_tokens`` leaves fewer than ``MIN_CONTEXT`` tokens."""
    from .models.window import MIN_CONTEXT, fit_prompt, model_window

    window = model_window(model)
    budget = 1 << 62 if window is None else window - max_new_tokens
    if budget < MIN_CONTEXT:
        raise FinealignError(f"max_new_tokens {max_new_tokens} leaves {budget} tokens of the model's {window}-token "
                             f"window for the prompt; at least {MIN_CONTEXT} are needed")
    return [fit_prompt(tokenizer, p, budget, render=lambda q: render_prompt(tokenizer, q)) for p in prompts]


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    n: int = 1,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 256,
    min_new_tokens: int = 0,
    seed: int | None = None,
    batch_size: int = 8,
    do_sample: bool | None = None,
    prompt_ids: Sequence[str] | None = None,
    on_step: Callable[[int], None] | None = None,
    on_cut: Callable[[int, int], None] | None = None,
    batch_tokens: int | None = None,
) -> list[list[Completion]]:
    """``n`` completions (with finish reason and token count) per prompt, ``batch_size`` rows at a time.

    Row (i, j) is seeded from ``(seed, prompt_ids[i] or i, j)``; ``seed=None`` draws the base
    seed from torch's global generator (so ``torch.manual_seed`` makes it reproducible). A prompt
    longer than the model's window minus ``max_new_tokens`` loses its oldest context
    (``fit_prompts``); ``on_cut(prompt index, tokens cut)`` reports each one. Rows are batched by
    prompt length (``core.batching.length_batches``: at most ``batch_size`` rows and ``batch_tokens``
    padded prompt tokens, default ``DEFAULT_BATCH_TOKENS``), so one long prompt runs alone.
    """
    sample = check_sampling(temperature, top_p, max_new_tokens, do_sample)
    if n < 1 or batch_size < 1:
        raise FinealignError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    pids = [str(i) for i in range(len(prompts))] if prompt_ids is None else [str(p) for p in prompt_ids]
    from .core.batching import DEFAULT_BATCH_TOKENS, length_batches

    fitted = fit_prompts(model, tokenizer, prompts, max_new_tokens)
    for i, f in enumerate(fitted):
        if f.cut_tokens and on_cut is not None:
            on_cut(i, f.cut_tokens)
    texts = [render_prompt(tokenizer, f.prompt) for f in fitted]
    rows = [(i, j) for i in range(len(prompts)) for j in range(n)]
    out: list[list[Completion]] = [[None] * n for _ in prompts]  # type: ignore[list-item]
    for batch in length_batches([fitted[i].tokens for i, _ in rows], batch_size, batch_tokens or DEFAULT_BATCH_TOKENS):
        chunk = [rows[b] for b in batch]
        comps = decode_rows(model, tokenizer, [texts[i] for i, _ in chunk],
                            [row_seed(seed, pids[i], j) for i, j in chunk], do_sample=sample,
                            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            min_new_tokens=min_new_tokens, on_step=on_step)
        for (i, j), c in zip(chunk, comps):
            out[i][j] = c
    return out


def generate_batch(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    n: int = 1,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 256,
    seed: int | None = None,
    batch_size: int = 8,
    do_sample: bool | None = None,
    min_new_tokens: int = 0,
) -> list[list[str]]:
    """``n`` completions per prompt (chat template applied, left padding, stop at EOS, special
    tokens stripped). ``temperature=0`` (or ``do_sample=False``) decodes greedily."""
    comps = generate_completions(model, tokenizer, prompts, n=n, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, seed=seed,
                                 batch_size=batch_size, do_sample=do_sample)
    return [[c.text for c in row] for row in comps]


# --------------------------------------------------------------------------- files


def _model_name(model) -> str:
    base = getattr(model, "get_base_model", lambda: model)()
    return str(getattr(getattr(base, "config", None), "_name_or_path", "") or type(base).__name__)


class TransformersBackend:
    """The transformers backend of the generate job (``generate_job.run_generate_job``): each chunk of
    prompts is decoded whole by ``generate_completions`` (every sample of every prompt of the chunk, so a
    resumed run computes what an uninterrupted run computes). ``model``: a spec (loaded with ``dtype`` /
    ``device`` on the first chunk to decode; the job checks that it exists before opening its output) or a ``(model, tokenizer)`` pair. ``model_name``: the lines'
    ``meta.model`` (default: the spec, or the loaded model's name)."""

    name = "transformers"

    def __init__(self, model, *, k: int, sampling: Sampling, batch_size: int = 8, dtype: str = "float32",
                 device: str = "auto", model_name: str | None = None):
        if isinstance(model, (tuple, list)):
            self._lm, self._tok = model
            self.fingerprint_model, self.dtype = self._lm, str(next(self._lm.parameters()).dtype)
            self.model_name = model_name or _model_name(self._lm)
        else:
            self._lm = self._tok = None
            self.fingerprint_model, self.dtype, self.model_name = str(model), dtype, model_name or str(model)
        self.k, self.sampling, self.rows_per_chunk, self.device = k, sampling, batch_size, device
        self.meta: dict = {}

    def __enter__(self) -> "TransformersBackend":
        if self._lm is None:  # a missing model fails here, before the output is opened; loading waits for work
            from .models.loading import check_model

            check_model(self.fingerprint_model)
        return self

    def __exit__(self, *exc) -> None:
        return None

    def load(self):
        """The model and tokenizer (loaded once), the tokenizer padding on the left."""
        if self._lm is None:
            from .models import load_model

            self._lm, self._tok = load_model(self.fingerprint_model, dtype=self.dtype, device=self.device)
        if self._tok.padding_side != "left":
            self._tok.padding_side = "left"
        return self._lm, self._tok

    def produce(self, chunks: Sequence[Chunk], pulse: Pulse | None) -> Iterator[Produced]:
        """One ``Produced`` per chunk: its rows (all k samples of each prompt), tokens decoded, seconds."""
        if not chunks:
            return
        lm, tok = self.load()
        s = self.sampling
        for chunk in chunks:
            t0 = time.perf_counter()
            counted = [0]
            cuts: dict[str, int] = {}

            def step(rows: int) -> None:
                counted[0] += rows
                if pulse is not None:
                    pulse.step(rows)

            comps = generate_completions(
                lm, tok, [p.prompt for p in chunk.items], n=self.k, temperature=s.temperature, top_p=s.top_p,
                max_new_tokens=s.max_new_tokens, seed=s.seed, batch_size=self.rows_per_chunk,
                prompt_ids=[p.id for p in chunk.items], on_step=step,
                on_cut=lambda i, n_cut: cuts.__setitem__(chunk.items[i].id, n_cut))
            rows = [Row(p, j, c, cuts.get(p.id, 0)) for p, row in zip(chunk.items, comps) for j, c in enumerate(row)]
            yield Produced(rows, counted[0], time.perf_counter() - t0)


def generate_file(
    model,
    prompts_path: str | Path,
    out_path: str | Path,
    *,
    k: int = 4,
    temperature: float = 0.7,
    top_p: float = 0.9,
    max_new_tokens: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    dtype: str = "float32",
    device: str = "auto",
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> GenerateStats:
    """Sample ``k`` completions for every prompt of ``prompts_path`` into ``out_path`` (JSONL): the generate
    job (``generate_job.run_generate_job``) with the transformers backend.

    ``model`` is a model spec (loaded with ``dtype`` / ``device``) or a ``(model, tokenizer)`` pair.
    Each line: ``{"id": "<prompt_id>:<sample>", "prompt_id", "sample", "prompt", "completion",
    "meta": {"model", "finish_reason", "n_tokens"[, "prompt_cut_tokens"]}}`` (the last when the prompt
    lost its oldest context to fit the window, docs/long-inputs.md). The prompts file is validated in full
    before anything is loaded or written. A rerun skips the ids already in ``out_path``; because
    prompts are processed in fixed chunks with per-row seeds, the finished file is the same as
    that of an uninterrupted run with the same arguments. ``on_progress(done, total, info)`` is
    called with responses done (skipped ones included) out of ``len(prompts) * k`` once before the
    first chunk and after each chunk (``info``: decoding speed). ``out_path`` is tied to the model's
    fingerprint and the sampling settings (``data.manifest``): a rerun with another model,
    temperature, top-p, max-new-tokens, seed or dtype refuses to resume; ``overwrite`` starts afresh
    (``k`` and the prompts may grow: more samples of the same settings extend the file). Raises
    ``DataError`` for a bad prompts file and ``FinealignError`` for bad arguments.
    """
    from .generate_job import run_generate_job

    sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    backend = TransformersBackend(model, k=k, sampling=sampling, batch_size=batch_size, dtype=dtype, device=device)
    return run_generate_job(backend, prompts_path, out_path, k=k, sampling=sampling, overwrite=overwrite,
                            on_progress=on_progress)
