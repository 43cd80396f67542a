"""Pure sampling math: nucleus filtering, inverse-CDF draws, per-row seeds.

No model calls, no I/O. Notation: B rows, V vocabulary.
"""

from __future__ import annotations

import hashlib

import torch


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    mass reaches ``top_p``.

    probs: (B, V) rows summing to 1. Returns (B, V) renormalised rows; a token is kept when the
    mass of the tokens strictly more likely than it is below ``top_p`` (so the top token always is).
    ``top_p >= 1`` returns ``probs`` unchanged.
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


def next_tokens(logits: torch.Tensor, u: torch.Tensor | None, *, temperature: float, top_p: float) -> torch.Tensor:
    """The next token of each row from its last-position logits.

    logits: (B, V) float; u: (B,) uniforms in [0, 1) for sampling, or ``None`` for greedy decoding
    (argmax). Sampling: softmax(logits / temperature), nucleus-filtered at ``top_p``, inverse-CDF
    draw with ``u``. Returns (B,) long token ids.
    """
    if u is None:
        return logits.argmax(dim=-1)
    probs = top_p_filter(torch.softmax(logits / temperature, dim=-1), top_p)
    return inverse_cdf_sample(probs, u)


def row_seed(seed: int, prompt_id: str, sample: int) -> int:
    """A stable 63-bit seed for one (prompt, sample) row; independent of Python's hash salt."""
    digest = hashlib.sha256(f"{seed}\x1f{prompt_id}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
