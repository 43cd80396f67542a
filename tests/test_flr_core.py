"""Pure FLR math (core/flr.py): hand-worked numbers and invariants."""

from __future__ import annotations

import math

import pytest
import torch

from finealign.core.flr import (ROOT, aggregate_followups, ancestor_mask, build_gather_plan, build_prefix_tree,
                                gather_values, mean_token_logprob, packed_attention_mask, segment_mean,
                                token_logprobs, tree_position_ids)


def test_prefix_tree_hand_worked():
    # [5,6,7] and [5,6,8] share the prefix 5,6 (nodes 0,1); 7 and 8 are siblings under node 1; [9] is a new root.
    t = build_prefix_tree([[5, 6, 7], [5, 6, 8], [9]])
    assert t.tokens.tolist() == [5, 6, 7, 8, 9]
    assert t.parent.tolist() == [-1, 0, 1, 1, -1]
    assert t.depth.tolist() == [0, 1, 2, 2, 0]
    assert t.paths == ((0, 1, 2), (0, 1, 3), (4,))


def test_prefix_tree_duplicates_share_every_node_and_paths_spell_the_sequences():
    seqs = [[ROOT, 1, 2], [ROOT, 1, 2], [ROOT, 1], [ROOT, 3, 2, 2]]
    t = build_prefix_tree(seqs)
    assert t.paths[0] == t.paths[1]
    assert t.paths[2] == t.paths[0][:2]
    assert t.tokens.shape[0] == 6  # ROOT, 1, 2, 3, 2, 2
    for s, p in zip(seqs, t.paths):
        assert t.tokens[list(p)].tolist() == s
        assert t.depth[list(p)].tolist() == list(range(len(s)))


def test_ancestor_mask_hand_worked():
    # parent [-1, 0, 1, 1, -1]: node 2's ancestors are 1 and 0; node 3's are 1 and 0; node 4 is alone.
    a = ancestor_mask(torch.tensor([-1, 0, 1, 1, -1]))
    assert a.int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]


def test_ancestor_mask_matches_walking_up_on_a_random_tree():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 3, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist() for _ in range(30)]
    t = build_prefix_tree(seqs)
    a = ancestor_mask(t.parent)
    for q in range(len(t.tokens)):
        anc, k = {q}, int(t.parent[q])
        while k >= 0:
            anc.add(k)
            k = int(t.parent[k])
        assert set(torch.nonzero(a[q]).flatten().tolist()) == anc


def test_packed_mask_and_positions():
    valid = torch.tensor([[True, True, False], [True, True, True]])  # row 0: 2 context tokens, row 1: 3
    allowed = ancestor_mask(torch.tensor([-1, 0, 0]))  # a root with two children
    m = packed_attention_mask(valid, allowed, torch.float32)
    assert m.shape == (2, 1, 3, 6)
    neg = torch.finfo(torch.float32).min
    # row 0, node 2 sees context 0,1 (not the padding at 2), the root (3) and itself (5), not its sibling (4)
    assert m[0, 0, 2].tolist() == [0, 0, neg, 0, neg, 0]
    assert m[1, 0, 1].tolist() == [0, 0, 0, 0, 0, neg]
    pos = tree_position_ids(torch.tensor([2, 3]), torch.tensor([0, 1, 1]))
    assert pos.tolist() == [[2, 3, 3], [3, 4, 4]]


def test_gather_values_hand_worked():
    # node 0 logits [0, 0, 0] -> every log-prob is -ln 3; node 1 logits [0, ln 3, 0] -> softmax [1/5, 3/5, 1/5].
    logits = torch.tensor([[[0.0, 0.0, 0.0], [0.0, math.log(3), 0.0]]])
    plan = build_gather_plan([[(1, 1)], [(0, 2), (1, 0)]])  # seq 0: token 1 at node 1; seq 1: token 2 at node 0, token 0 at node 1
    assert plan.rows.tolist() == [0, 1]
    vals = gather_values(logits, plan)  # (1, 3) in pair order
    assert torch.allclose(vals, torch.tensor([[math.log(3 / 5), -math.log(3), math.log(1 / 5)]]), atol=1e-6)
    raw = gather_values(logits, plan, log_probs=False)
    assert torch.allclose(raw, torch.tensor([[math.log(3), 0.0, 0.0]]))
    means = segment_mean(vals, plan.seq, 2)
    # seq 1: (-ln 3 + ln 1/5) / 2 = -(ln 3 + ln 5) / 2 = -ln 15 / 2
    assert torch.allclose(means, torch.tensor([[math.log(3 / 5), -math.log(15) / 2]]), atol=1e-6)


def test_gather_plan_rejects_an_empty_sequence():
    with pytest.raises(ValueError):
        build_gather_plan([[(0, 1)], []])


def test_aggregate_followups_hand_worked():
    # dim 0: positives -1, -3 (mean -2), negative -4 -> s0 = -2 - (-4) = 2
    # dim 1: positive -2, negatives -2.5, -3.5 (mean -3) -> s1 = -2 - (-3) = 1;  FLR = (2 + 1) / 2 = 1.5
    values = torch.tensor([[-1.0, -3.0, -4.0, -2.0, -2.5, -3.5]])
    dim = torch.tensor([0, 0, 0, 1, 1, 1])
    pos = torch.tensor([True, True, False, True, False, False])
    agg = aggregate_followups(values, dim, pos, 2)
    assert agg.per_dim.tolist() == [[2.0, 1.0]]
    assert agg.total.tolist() == [1.5]


def test_aggregate_needs_both_polarities():
    with pytest.raises(ValueError):
        aggregate_followups(torch.zeros(1, 2), torch.tensor([0, 0]), torch.tensor([True, True]), 1)


def test_token_logprobs_match_log_softmax_and_masked_mean():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=g)
    tgt = torch.randint(0, 7, (2, 4), generator=g)
    ref = torch.log_softmax(logits, -1).gather(-1, tgt[..., None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, tgt), ref, atol=1e-6)
    mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
    got = mean_token_logprob(logits, tgt, mask)
    assert torch.allclose(got, torch.stack([(ref[0, 0] + ref[0, 2]) / 2, ref[1, 3]]), atol=1e-6)
    # values at masked positions do not matter
    logits2 = logits.clone()
    logits2[0, 1] = 1e4
    assert torch.allclose(mean_token_logprob(logits2, tgt, mask), got)


def test_tree_pass_equals_one_pass_per_sequence_on_a_raw_model(tiny):
    """The packed tree with its mask and positions reproduces each sequence's own forward pass."""
    model, _ = tiny
    ctx = [5, 9, 17, 30, 2]
    seqs = [[11, 12, 13], [11, 12, 14, 15], [16], [11, 12, 13]]
    tree = build_prefix_tree([[ROOT] + s for s in seqs])
    ids = tree.tokens.clone()
    ids[0] = ctx[-1]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ctx[:-1]]), use_cache=True)
        mask = packed_attention_mask(torch.ones(1, len(ctx) - 1, dtype=torch.bool), ancestor_mask(tree.parent), torch.float32)
        pos = tree_position_ids(torch.tensor([len(ctx) - 1]), tree.depth)
        packed = model(input_ids=ids[None], attention_mask=mask, position_ids=pos,
                       past_key_values=out.past_key_values, use_cache=True).logits[0]
        for s, path in zip(seqs, tree.paths):
            full = model(input_ids=torch.tensor([ctx + s])).logits[0, len(ctx) - 1:]
            assert torch.allclose(packed[list(path)], full, atol=1e-5)
