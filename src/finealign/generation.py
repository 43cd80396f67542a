"""Sampling completions from a causal LM: batched, left-padded, reproducible, resumable.

Two entry points:

* ``generate_batch(model, tokenizer, prompts, n=...)``: ``n`` completions per prompt, in memory.
* ``generate_file(spec, prompts_path, out_path, k=...)``: reads a prompt-bearing file, appends one
  ``ResponseRecord`` line per (prompt, sample) to ``out_path``, and resumes on rerun.

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

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from .data.records import FieldError, Prompt, as_messages, check_prompt, prompt_text
from .errors import DataError, FinealignError

FINISH_STOP = "stop"
FINISH_LENGTH = "length"


# --------------------------------------------------------------------------- pure sampling math


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose mass reaches ``top_p``.

    probs: (B, V) rows summing to 1. Returns (B, V) renormalised rows; a token is kept when the
    mass of the tokens strictly more likely than it is below ``top_p`` (so the top token always is).
    """
    if top_p >= 1.0:
        return probs
    sorted_p, order = torch.sort(probs, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
    sorted_p = torch.where(mass_before < top_p, sorted_p, torch.zeros_like(sorted_p))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(dim=-1, keepdim=True)


def inverse_cdf_sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one token per row: the first index whose cumulative probability reaches ``u * total``.

    probs: (B, V) non-negative; u: (B,) uniform in [0, 1). Returns (B,) long token ids. Tokens of
    zero probability are never drawn.
    """
    cdf = torch.cumsum(probs, dim=-1)
    target = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    idx = idx.clamp(max=probs.shape[-1] - 1)
    # right=True skips zero-probability tokens whose cdf equals the target; guard the top edge
    zero = probs.gather(-1, idx.unsqueeze(-1)).squeeze(-1) <= 0
    if zero.any():
        idx = torch.where(zero, probs.argmax(dim=-1), idx)
    return idx


def row_seed(seed: int, prompt_id: str, sample: int) -> int:
    """A stable 63-bit seed for one (prompt, sample) row; independent of Python's hash salt."""
    digest = hashlib.sha256(f"{seed}\x1f{prompt_id}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------- decoding loop


class Completion(NamedTuple):
    """One generated completion: text (special tokens stripped), why it ended, tokens before EOS."""

    text: str
    finish_reason: str  # "stop" (an EOS token) | "length" (max_new_tokens reached)
    n_tokens: int


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
    """The prompt as model input text: the chat template with the assistant turn opened."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
    return prompt_text(prompt)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _accepts_logits_to_keep(model) -> bool:
    import inspect

    fwd = getattr(model, "get_base_model", lambda: model)().forward
    try:
        return "logits_to_keep" in inspect.signature(fwd).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
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
    that produced a token in each step.
    """
    if tokenizer.padding_side != "left":
        raise FinealignError("generation needs a tokenizer with padding_side='left'")
    dev = _model_device(model)
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    ids = enc["input_ids"].to(dev)  # (B, T)
    mask = enc["attention_mask"].to(dev)  # (B, T)
    B = ids.shape[0]
    stops = torch.tensor(stop_token_ids(model, tokenizer), device=dev, dtype=torch.long)
    gens = None
    if do_sample:
        gens = [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    from transformers import DynamicCache

    cache = DynamicCache()
    position = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    step_ids, step_pos = ids, position
    out_tokens = torch.zeros((B, max_new_tokens), dtype=torch.long, device=dev)
    lengths = torch.full((B,), max_new_tokens, dtype=torch.long, device=dev)
    stopped = torch.zeros(B, dtype=torch.bool, device=dev)
    for t in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, past_key_values=cache,
                    use_cache=True, **extra)
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()  # (B, V)
        if t < min_new_tokens and len(stops):
            logits[:, stops] = float("-inf")
        if do_sample:
            probs = top_p_filter(torch.softmax(logits / temperature, dim=-1), top_p)
            u = torch.stack([torch.rand((), generator=g, device=dev) for g in gens])  # (B,)
            nxt = inverse_cdf_sample(probs, u)
        else:
            nxt = logits.argmax(dim=-1)
        out_tokens[:, t] = nxt
        is_stop = torch.isin(nxt, stops) & ~stopped
        lengths = torch.where(is_stop, torch.full_like(lengths, t), lengths)
        if on_step is not None:
            on_step(int((~stopped).sum()))
        stopped |= is_stop
        if bool(stopped.all()):
            break
        step_ids = nxt.unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=dev)], dim=-1)
    out_tokens, lengths, stopped = out_tokens.cpu(), lengths.cpu().tolist(), stopped.cpu().tolist()
    result = []
    for i in range(B):
        toks = out_tokens[i, : lengths[i]].tolist()
        text = tokenizer.decode(toks, skip_special_tokens=True)
        result.append(Completion(text, FINISH_STOP if stopped[i] else FINISH_LENGTH, len(toks)))
    return result


def _check_sampling(temperature: float, top_p: float, max_new_tokens: int, do_sample: bool | None) -> bool:
    if temperature < 0:
        raise FinealignError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise FinealignError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise FinealignError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample is None:
        return temperature > 0
    if do_sample and temperature == 0:
        raise FinealignError("do_sample=True needs a temperature > 0 (temperature 0 means greedy)")
    return bool(do_sample)


def _check_context(model, tokenizer, texts: Sequence[str], pids: Sequence[str], max_new_tokens: int) -> None:
    """Warn, naming the prompts, when prompt + ``max_new_tokens`` exceeds the model's context.

    Only a warning: rotary-position models still run past it (with degraded quality).
    """
    import warnings

    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return
    lengths = [len(x) for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    over = [(pid, n) for pid, n in zip(pids, lengths) if n + max_new_tokens > limit]
    if over:
        pid, n = over[0]
        warnings.warn(f"{len(over)} prompt(s) + max_new_tokens {max_new_tokens} exceed the model's context of "
                      f"{limit} tokens (first: prompt {pid}, {n} prompt tokens); expect degraded output",
                      stacklevel=3)


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
) -> list[list[Completion]]:
    """``n`` completions (with finish reason and token count) per prompt, ``batch_size`` rows at a time.

    Row (i, j) is seeded from ``(seed, prompt_ids[i] or i, j)``; ``seed=None`` draws the base
    seed from torch's global generator (so ``torch.manual_seed`` makes it reproducible).
    """
    sample = _check_sampling(temperature, top_p, max_new_tokens, do_sample)
    if n < 1 or batch_size < 1:
        raise FinealignError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    pids = [str(i) for i in range(len(prompts))] if prompt_ids is None else [str(p) for p in prompt_ids]
    texts = [render_prompt(tokenizer, p) for p in prompts]
    _check_context(model, tokenizer, texts, pids, max_new_tokens)
    rows = [(i, j) for i in range(len(prompts)) for j in range(n)]
    out: list[list[Completion]] = [[None] * n for _ in prompts]  # type: ignore[list-item]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
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


@dataclass(frozen=True)
class PromptItem:
    id: str
    prompt: Prompt


@dataclass(frozen=True)
class GenerateStats:
    """What one ``generate_file`` run did."""

    prompts: int  # prompts in the input file
    responses_written: int  # response lines appended by this run
    skipped: int  # responses already in the output file (a resumed run)
    empty: int  # written completions that are empty or whitespace only (kept in the file)
    truncated: int  # written completions that hit max_new_tokens (finish_reason "length")
    new_tokens: int  # tokens decoded by this run (a regenerated chunk's done rows included)
    seconds: float  # wall time spent decoding

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def read_prompts(path: str | Path) -> list[PromptItem]:
    """Prompts of any prompt-bearing file (prompts, pairs, responses, ...), with stable ids.

    A prompt's id is the record's ``prompt_id`` (response files) or ``id``, else its 1-based line
    number. Records repeating an id with the same prompt (several responses to one prompt) are
    read once; the same id with a different prompt is an error. Raises ``DataError`` naming
    ``path:line: field``.
    """
    from .data.io import iter_objects

    items: list[PromptItem] = []
    seen: dict[str, tuple[int, Prompt]] = {}
    for line, obj in iter_objects(path):
        try:
            prompt = check_prompt(obj.get("prompt"))
            pid = None
            for key in ("prompt_id", "id"):
                v = obj.get(key)
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
                    raise FieldError(key, f"expected a non-empty string or integer, got {v!r}")
                pid = str(v)
                break
        except FieldError as e:
            raise DataError(path, line, e.field, e.problem) from None
        pid = str(line) if pid is None else pid
        if pid in seen:
            first_line, first_prompt = seen[pid]
            if first_prompt != prompt:
                raise DataError(path, line, "id", f"duplicate id {pid!r} (first at line {first_line}) with a different prompt")
            continue
        seen[pid] = (line, prompt)
        items.append(PromptItem(pid, prompt))
    if not items:
        raise DataError(path, None, None, "no prompts in file")
    return items


def _model_name(model) -> str:
    base = getattr(model, "get_base_model", lambda: model)()
    return str(getattr(getattr(base, "config", None), "_name_or_path", "") or type(base).__name__)


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
    progress: bool = True,
) -> GenerateStats:
    """Sample ``k`` completions for every prompt of ``prompts_path`` into ``out_path`` (JSONL).

    ``model`` is a model spec (loaded with ``dtype`` / ``device``) or a ``(model, tokenizer)`` pair.
    Each line: ``{"id": "<prompt_id>:<sample>", "prompt_id", "sample", "prompt", "completion",
    "meta": {"model", "finish_reason", "n_tokens"}}``. The prompts file is validated in full
    before anything is loaded or written. A rerun skips the ids already in ``out_path``; because
    prompts are processed in fixed chunks with per-row seeds, the finished file is the same as
    that of an uninterrupted run with the same arguments.
    """
    from .data.io import JsonlAppender

    _check_sampling(temperature, top_p, max_new_tokens, None)
    if k < 1 or batch_size < 1:
        raise FinealignError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    items = read_prompts(prompts_path)
    out_path = Path(out_path)
    if out_path.exists() and out_path.resolve() == Path(prompts_path).resolve():
        raise FinealignError(f"{out_path}: the output file must differ from the prompts file")

    def rid(pid: str, s: int) -> str:
        return f"{pid}:{s}"

    if isinstance(model, (tuple, list)):
        lm, tok = model
        name = _model_name(lm)
    else:
        from .models import load_model

        name = str(model)
        lm, tok = load_model(name, dtype=dtype, device=device)
    if tok.padding_side != "left":
        tok.padding_side = "left"

    per_chunk = max(1, batch_size // k)
    chunks = [items[i : i + per_chunk] for i in range(0, len(items), per_chunk)]
    total = len(items) * k
    written = empty = truncated = new_tokens = 0
    seconds = 0.0
    with JsonlAppender(out_path, key=lambda o: o["id"]) as app:
        skipped = sum(rid(p.id, s) in app for p in items for s in range(k))
        bar = None
        if progress:
            from .cli.common import progress as make_progress

            bar = make_progress()
            bar.start()
            task = bar.add_task("generate", total=total, completed=skipped, info="")
        try:
            for chunk in chunks:
                todo = [(p, s) for p in chunk for s in range(k) if rid(p.id, s) not in app]
                if not todo:
                    continue
                t0 = time.perf_counter()
                counted: list[int] = []
                comps = generate_completions(
                    lm, tok, [p.prompt for p in chunk], n=k, temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                    prompt_ids=[p.id for p in chunk], on_step=counted.append)
                seconds += time.perf_counter() - t0
                new_tokens += sum(counted)
                by_id = {p.id: row for p, row in zip(chunk, comps)}
                for p, s in todo:
                    c = by_id[p.id][s]
                    app.append({"id": rid(p.id, s), "prompt_id": p.id, "sample": s, "prompt": p.prompt,
                                "completion": c.text,
                                "meta": {"model": name, "finish_reason": c.finish_reason, "n_tokens": c.n_tokens}})
                    written += 1
                    empty += not c.text.strip()
                    truncated += c.finish_reason == FINISH_LENGTH
                if bar is not None:
                    bar.update(task, advance=len(todo),
                               info=f"{new_tokens / max(seconds, 1e-9):.1f} tok/s")
        finally:
            if bar is not None:
                bar.stop()
    return GenerateStats(prompts=len(items), responses_written=written, skipped=skipped, empty=empty,
                         truncated=truncated, new_tokens=new_tokens, seconds=seconds)
