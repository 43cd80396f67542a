"""Move per-token rewards from a scorer's tokenization onto the policy's, through character offsets.

A token-level reward model may use another tokenizer than the policy (or the same one, with
different merges at the response's edges). Both sides give each token a (start, end) character
span in the same response text; a scorer token's reward goes to the policy token that holds the
scorer token's last character, so the total reward of a response is preserved exactly.
Pure functions over lists; no tokenizers are called here.
"""

from __future__ import annotations

import bisect
from typing import Callable, Sequence


def map_token_rewards(
    src_offsets: Sequence[tuple[int, int]],
    src_rewards: Sequence[float],
    dst_offsets: Sequence[tuple[int, int]],
) -> list[float]:
    """Per-token rewards on ``dst_offsets`` (len T_dst) from rewards on ``src_offsets`` (len T_src).

    A source token with span (s, e) lands on the destination token whose span holds character
    e - 1; a character in no destination span (whitespace the decoder merged, text past the
    policy's last token) lands on the last destination token starting at or before it, else the
    first. Zero-width source tokens use s. The sum of rewards is preserved when T_dst > 0; with
    no destination tokens the result is empty.
    """
    if len(src_offsets) != len(src_rewards):
        raise ValueError(f"{len(src_offsets)} offsets but {len(src_rewards)} rewards")
    out = [0.0] * len(dst_offsets)
    if not dst_offsets:
        return out
    starts = [s for s, _ in dst_offsets]
    for (s, e), r in zip(src_offsets, src_rewards):
        ch = e - 1 if e > s else s
        j = _holder(dst_offsets, starts, ch)
        out[j] += float(r)
    return out


def _holder(dst: Sequence[tuple[int, int]], starts: list[int], ch: int) -> int:
    j = bisect.bisect_right(starts, ch) - 1  # last token starting at or before ch
    if j < 0:
        return 0
    # several tokens can start at the same char (zero-width ones): prefer one that holds ch
    k = j
    while k >= 0 and starts[k] == starts[j]:
        if dst[k][0] <= ch < dst[k][1]:
            return k
        k -= 1
    return j


def decode_offsets(token_ids: Sequence[int], decode: Callable[[list[int]], str]) -> tuple[str, list[tuple[int, int]]]:
    """The text of ``token_ids`` and each token's (start, end) span in it, from prefix decodes.

    ``decode(ids) -> str`` is the tokenizer's decode (special tokens skipped). Token k ends where
    the decode of the first k + 1 tokens ends; a prefix that ends inside a multi-byte character
    (a trailing U+FFFD) ends where the last complete character does. Spans never go backwards.
    """
    text = decode(list(token_ids))
    offsets: list[tuple[int, int]] = []
    prev = 0
    for k in range(len(token_ids)):
        pre = decode(list(token_ids[: k + 1])).rstrip("\ufffd")
        end = len(pre) if text.startswith(pre) else _common_prefix(text, pre)
        end = min(max(end, prev), len(text))
        offsets.append((prev, end))
        prev = end
    return text, offsets


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
