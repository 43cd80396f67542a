"""Pure math of the follow-up likelihood reward (FLR): no model calls, no I/O.

Notation: B rows (responses, batched), Lc context tokens (padded), N nodes of the prefix tree of
follow-up token sequences, F follow-ups, D dimensions, M (row, target) pairs to read, R distinct
tree nodes whose logits are needed, V vocabulary.

The fast scorer encodes each context once (KV cache), then runs every follow-up of the set in
ONE packed sequence: the follow-ups' token sequences are merged into a prefix tree (shared
template prefixes and shared first words become one node), each tree node attends to the whole
context and to its own ancestors only (a 4-D attention mask), and sits at position
``context length + depth``. A node's output predicts the next token of every follow-up that
passes through it, so each follow-up token's log-probability is read from its parent node.
Every function here is checked against a one-forward-pass-per-follow-up loop in the tests.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

ROOT = -1  # placeholder token of the tree root (the context's last token, filled in per row)


class PrefixTree(NamedTuple):
    """A trie over token sequences, nodes in creation order (a parent precedes its children).

    ``tokens`` (N,) token ids (``ROOT`` placeholders allowed); ``parent`` (N,) parent node or -1;
    ``depth`` (N,) 0 for roots; ``paths[i]`` the node of every token of sequence ``i``.
    """

    tokens: torch.Tensor
    parent: torch.Tensor
    depth: torch.Tensor
    paths: tuple[tuple[int, ...], ...]


class GatherPlan(NamedTuple):
    """Which logits to read: pair m reads token ``targets[m]`` at tree node ``rows[row_of[m]]``
    and belongs to sequence ``seq[m]``. ``rows`` (R,) distinct nodes, sorted; ``row_of`` (M,)
    index into ``rows``; ``targets`` (M,); ``seq`` (M,)."""

    rows: torch.Tensor
    row_of: torch.Tensor
    targets: torch.Tensor
    seq: torch.Tensor


class FollowupAggregate(NamedTuple):
    """``per_dim`` (B, D): mean(positive) - mean(negative) per dimension; ``total`` (B,): mean over D."""

    per_dim: torch.Tensor
    total: torch.Tensor


def build_prefix_tree(seqs: Sequence[Sequence[int]]) -> PrefixTree:
    """Merge token sequences into a prefix tree; equal prefixes share nodes (duplicates share all).

    Example: [[5, 6, 7], [5, 6, 8], [9]] -> tokens [5, 6, 7, 8, 9], parent [-1, 0, 1, 1, -1],
    depth [0, 1, 2, 2, 0], paths ((0, 1, 2), (0, 1, 3), (4,)).
    """
    children: dict[tuple[int, int], int] = {}
    tokens: list[int] = []
    parent: list[int] = []
    depth: list[int] = []
    paths = []
    for seq in seqs:
        node, path = -1, []
        for tok in seq:
            key = (node, int(tok))
            nxt = children.get(key)
            if nxt is None:
                nxt = len(tokens)
                children[key] = nxt
                tokens.append(int(tok))
                parent.append(node)
                depth.append(0 if node < 0 else depth[node] + 1)
            node = nxt
            path.append(node)
        paths.append(tuple(path))
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return PrefixTree(as_long(tokens), as_long(parent), as_long(depth), tuple(paths))


def ancestor_mask(parent: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: ``out[q, k]`` is True iff node k is node q or one of its ancestors.

    ``parent`` (N,) with -1 for roots. Walks all nodes up one level per step (max depth steps).
    """
    n = parent.shape[0]
    out = torch.eye(n, dtype=torch.bool)
    idx = torch.arange(n)
    cur = parent.clone()
    while bool((cur >= 0).any()):
        live = cur >= 0
        out[idx[live], cur[live]] = True
        cur = torch.where(live, parent[cur.clamp(min=0)], cur)
    return out


def packed_attention_mask(ctx_valid: torch.Tensor, tree_allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4-D mask (B, 1, N, Lc + N) for the tree pass over a cached context.

    ``ctx_valid`` (B, Lc) bool: real (not padding) context tokens; ``tree_allowed`` (N, N) bool
    from ``ancestor_mask``. Allowed entries are 0, others the dtype's most negative value (works
    with eager and SDPA attention; every row allows at least itself, so no row is all-masked).
    """
    b, lc = ctx_valid.shape
    n = tree_allowed.shape[0]
    allowed = torch.cat([ctx_valid[:, None, :].expand(b, n, lc), tree_allowed[None].expand(b, n, n)], dim=-1)
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def tree_position_ids(start: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """(B, N) position ids: the tree root of row b sits at ``start[b]``, a node at ``start + depth``."""
    return start[:, None] + depth[None, :]


def build_gather_plan(pairs: Sequence[Sequence[tuple[int, int]]]) -> GatherPlan:
    """``pairs[i]``: the (tree node, target token) pairs whose values sequence i averages."""
    nodes, targets, seq = [], [], []
    for i, ps in enumerate(pairs):
        if not ps:
            raise ValueError(f"sequence {i} has nothing to score")
        for node, tgt in ps:
            nodes.append(node)
            targets.append(tgt)
            seq.append(i)
    nodes_t = torch.tensor(nodes, dtype=torch.long)
    rows, row_of = torch.unique(nodes_t, sorted=True, return_inverse=True)
    return GatherPlan(rows, row_of, torch.tensor(targets, dtype=torch.long), torch.tensor(seq, dtype=torch.long))


def gather_values(logits: torch.Tensor, plan: GatherPlan, *, log_probs: bool = True) -> torch.Tensor:
    """(B, M) values of the plan's pairs from ``logits`` (B, R, V) at ``plan.rows``.

    ``log_probs``: log-softmax value (computed in float32); otherwise the raw logit (the
    reference code's quantity).
    """
    picked = logits[:, plan.row_of, plan.targets].float()  # (B, M)
    if not log_probs:
        return picked
    lse = torch.logsumexp(logits.float(), dim=-1)  # (B, R)
    return picked - lse[:, plan.row_of]


def segment_mean(values: torch.Tensor, seq: torch.Tensor, n_seq: int) -> torch.Tensor:
    """(B, S) mean of ``values`` (B, M) over the pairs of each sequence (``seq`` (M,) in [0, S))."""
    b = values.shape[0]
    sums = torch.zeros(b, n_seq, dtype=values.dtype).index_add_(1, seq, values)
    counts = torch.bincount(seq, minlength=n_seq).to(values.dtype)
    return sums / counts


def mean_token_logprob(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean log p(target) over masked positions: ``logits`` (B, T, V) predicting ``targets``
    (B, T); ``mask`` (B, T) bool, at least one True per row. Log-softmax in float32."""
    lp = token_logprobs(logits, targets)
    m = mask.to(lp.dtype)
    return (lp * m).sum(-1) / m.sum(-1)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T) log p(targets) from ``logits`` (B, T, V), float32."""
    lf = logits.float()
    return lf.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(lf, dim=-1)


def aggregate_followups(values: torch.Tensor, dim_index: torch.Tensor, positive: torch.Tensor,
                        n_dims: int) -> FollowupAggregate:
    """Per-dimension FLR from per-follow-up values.

    ``values`` (B, F) l(f) per follow-up; ``dim_index`` (F,) in [0, D); ``positive`` (F,) bool.
    ``per_dim[b, d] = mean_{f in P_d} values[b, f] - mean_{f in N_d} values[b, f]``;
    ``total[b] = mean_d per_dim[b, d]``. Every dimension needs both polarities.
    """
    pos = segment_mean_masked(values, dim_index, n_dims, positive)
    neg = segment_mean_masked(values, dim_index, n_dims, ~positive)
    per_dim = pos - neg
    return FollowupAggregate(per_dim, per_dim.mean(dim=-1))


def segment_mean_masked(values: torch.Tensor, index: torch.Tensor, n: int, keep: torch.Tensor) -> torch.Tensor:
    """(B, n) mean of ``values[:, f]`` (B, F) over the f with ``keep[f]``, grouped by ``index[f]``."""
    k = keep.to(values.dtype)
    sums = torch.zeros(values.shape[0], n, dtype=values.dtype).index_add_(1, index, values * k)
    counts = torch.zeros(n, dtype=values.dtype).index_add_(0, index, k)
    if bool((counts == 0).any()):
        raise ValueError("every dimension needs at least one positive and one negative follow-up")
    return sums / counts
