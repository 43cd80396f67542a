"""Batches formed by length: pure index arithmetic (no model, no I/O).

A batch of sequences costs about ``rows x longest`` (every row is padded to the longest), and the
attention of a padded batch ``rows x longest^2``. Sorting by length before cutting batches keeps one
long item from dragging short ones up to its length, and a token budget puts a long item in a batch
of its own, so the memory of one forward pass is bounded by ``max(max_tokens, window)`` tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_BATCH_TOKENS", "length_batches"]

DEFAULT_BATCH_TOKENS = 4096  # padded tokens per batch (rows x longest); a longer single item runs alone
SLACK = 32  # tokens: an item joins a batch if it is at most 2 x the batch's shortest + SLACK long


def length_batches(lengths: Sequence[int], max_rows: int, max_tokens: int | None = DEFAULT_BATCH_TOKENS) -> list[list[int]]:
    """Indices ``0..N-1`` grouped into batches of similar length.

    ``lengths``: (N,) sequence lengths in tokens. Items are sorted by length (ties keep their input
    order), then cut greedily: a batch takes the next item while it has fewer than ``max_rows`` rows,
    ``(rows + 1) x (the item's length) <= max_tokens`` (the item is the batch's longest, since
    lengths ascend) and the item is at most ``2 x shortest + SLACK`` tokens long (so padding stays
    under about half of a batch); an item longer than ``max_tokens`` forms a batch alone.
    ``max_tokens=None``: no token budget. Every index appears exactly once. Raises ``ValueError``
    if ``max_rows < 1``.

    Example: lengths (5, 100, 6, 7), max_rows 2, max_tokens 50 -> sorted 0(5), 2(6), 3(7), 1(100)
    -> [[0, 2], [3], [1]] (the third item would make 3 rows; 100 > 50 goes alone).
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        fits = (cur is not None and len(cur) < max_rows
                and lengths[i] <= 2 * lengths[cur[0]] + SLACK
                and (max_tokens is None or (len(cur) + 1) * max(int(lengths[i]), 1) <= max_tokens))
        if fits:
            cur.append(i)
        else:
            batches.append([i])
    return batches
