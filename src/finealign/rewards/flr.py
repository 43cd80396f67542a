"""Follow-up likelihood reward (FLR) scorer.

``flr:MODEL[,mode=loglik|pmi|reference|finetuned][,followups=FILE][,dims=a+b][,batch_size=4]
[,dtype=float32|bfloat16][,device=auto|cpu|cuda][,max_length=N][,strategy=tree|naive]``

For a context x (chat messages), a response y and a follow-up f rendered as the next turn with the
model's chat template, ``l(f)`` is the mean log-probability of f's own text tokens (template
tokens are conditioned on, not scored). Per dimension ``s_d = mean_{P_d} l - mean_{N_d} l``, and
``FLR = mean_d s_d``. The conversation is rendered by ``data.chat``: a prompt that already carries
the template is used as it is, and an empty response is scored as it is. Modes:

* ``loglik`` (default): f is the next *user* turn after x and y.
* ``pmi``: ``l(f | x, y) - l(f | x, empty response)``; the second term (the follow-up's prior
  given the prompt) is computed once per distinct prompt and cached. It cancels in comparisons of
  responses to the same prompt and matters across prompts (rating correlation).
* ``reference``: the FLR reference code's number (its README: the mean of the *raw logits* of the
  follow-up's token ids, all read at one position: ``len(full) - len(tokenizer(f).input_ids)``).
* ``finetuned``: a follow-up model fine-tuned on feedback (``finealign train followup-sft``): the
  conversation is role-swapped with ``roleswap_messages`` and f is the next *assistant* turn.

Speed (``strategy=tree``, default): each context is encoded once; all follow-ups then run as ONE
packed sequence (a prefix tree over their tokens, 4-D attention mask, see ``core/flr.py``) on top
of the context's KV cache, ``batch_size`` responses at a time. ``strategy=naive`` is the
straightforward computation (one full forward pass per follow-up), kept as the reference for
tests and the benchmark. Both read the same token ids, so they agree to float precision.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.batching import length_batches
from ..core.flr import (ROOT, GatherPlan, PrefixTree, aggregate_followups, ancestor_mask, build_gather_plan,
                        build_prefix_tree, gather_values, packed_attention_mask, segment_mean, tree_position_ids)
from ..data.chat import encode_with_span, is_rendered, pad_right, render_pair, render_turn
from ..data.records import Message, Prompt, as_messages
from ..errors import FinealignError
from ..models.compat import cache_kwargs, output_cache
from .base import Scorer
from .lm_common import ScoreStats, load_lm, model_max_length, warn_truncated
from .followups import FollowupSet, load_followups
from .roleswap import roleswap_messages

MODES = ("loglik", "pmi", "reference", "finetuned")
STRATEGIES = ("tree", "naive")


@dataclass(frozen=True)
class FLRConfig:
    """FLR scorer settings.

    ``followups``: a JSON/YAML follow-up file (None = the paper's set); ``dims``: keep these
    dimensions only; ``batch_size``: responses whose follow-up trees run together;
    ``max_length``: token window (None = the model's); ``strategy``: ``tree`` (fast) or ``naive``.
    """

    model: str = "smollm2-135m-instruct"
    mode: str = "loglik"
    followups: str | None = None
    dims: tuple[str, ...] | None = None
    batch_size: int = 4
    dtype: str = "float32"
    device: str = "auto"
    max_length: int | None = None
    strategy: str = "tree"

    def __post_init__(self):
        if self.mode not in MODES:
            raise FinealignError(f"FLR mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.strategy not in STRATEGIES:
            raise FinealignError(f"FLR strategy {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.batch_size < 1:
            raise FinealignError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 8:
            raise FinealignError(f"max_length must be >= 8, got {self.max_length}")


@dataclass(frozen=True)
class FLRResult:
    """One response's FLR: ``score`` (mean over dimensions), ``dims`` {dimension: s_d} and, on
    request, ``followups``: l(f) of every follow-up in the set's order (after the prior is
    subtracted in ``pmi`` mode)."""

    score: float
    dims: dict[str, float]
    followups: tuple[float, ...] | None = None


@dataclass(frozen=True)
class _Plan:
    """How one follow-up set is laid out after a context (valid for every context whose template
    adds the same text). Path index 0 of every follow-up is the tree root = the context's last
    token; path index i >= 1 is the follow-up segment's token i - 1."""

    segments: tuple[tuple[int, ...], ...]  # token ids the template adds for each follow-up
    pairs: tuple[tuple[tuple[int, int], ...], ...]  # per follow-up: (path index whose output is read, target token)
    tree: PrefixTree
    allowed: torch.Tensor  # (N, N) ancestor-or-self
    gather: GatherPlan
    max_segment: int


class FLRScorer(Scorer):
    """The follow-up likelihood reward; see the module docstring."""

    name = "flr"

    def __init__(self, config: FLRConfig = FLRConfig(), model=None, tokenizer=None,
                 followups: FollowupSet | None = None):
        self.config = config
        self.followups = followups or load_followups(config.followups, config.dims)
        if followups is not None and config.dims:
            self.followups = self.followups.subset(config.dims)
        if model is None:
            model, tokenizer = load_lm(config.model, config.dtype, config.device)
        self.model, self.tokenizer = model, tokenizer
        self.max_length = model_max_length(model, config.max_length)
        self.stats = ScoreStats()
        self._plans: dict[str, _Plan] = {}
        self._prior: dict[str, torch.Tensor] = {}
        self._boundary_checked = False
        fs = self.followups
        self._dim_index = torch.tensor([fs.dims.index(f.dim) for f in fs.items], dtype=torch.long)
        self._positive = torch.tensor([f.positive for f in fs.items], dtype=torch.bool)
        self._role = "assistant" if config.mode == "finetuned" else "user"

    # ------------------------------------------------------------ contexts and plans

    def _context(self, prompt: Prompt, response: str) -> list[Message] | str:
        """The conversation the follow-ups come after: messages, or the rendered text (``data.chat``)
        when the prompt already carries the chat template (then used as it is)."""
        rendered = is_rendered(prompt, self.tokenizer)
        if self.config.mode == "finetuned":
            if rendered:
                raise FinealignError("FLR finetuned mode role-swaps the conversation, which needs the prompt as text "
                                     "or messages; this prompt already carries the chat template")
            return roleswap_messages(prompt, response)
        if rendered:
            return render_pair(self.tokenizer, prompt, response).text
        return as_messages(prompt) + [{"role": "assistant", "content": response}]

    def _plan_for(self, context: list[Message] | str) -> tuple[list[int], _Plan]:
        """The context's token ids and the follow-up plan that applies after it."""
        probe = render_turn(self.tokenizer, context, self._role, self.followups.items[0].text)
        plan = self._plans.get(probe.segment)
        if plan is None:
            plan = self._build_plan(context)
            self._plans[probe.segment] = plan
        ctx_ids = self.tokenizer(probe.context, add_special_tokens=False)["input_ids"]
        if not self._boundary_checked:
            self._boundary_checked = True
            whole = self.tokenizer(probe.context + probe.segment, add_special_tokens=False)["input_ids"]
            if list(whole) != list(ctx_ids) + list(plan.segments[0]):
                warnings.warn("the tokenizer merges tokens across the context/follow-up boundary; FLR tokenizes "
                              "the two parts separately, which may differ slightly from tokenizing the whole text")
        return list(ctx_ids), plan

    def _build_plan(self, context: list[Message] | str) -> _Plan:
        segments, pairs = [], []
        for f in self.followups.items:
            turn = render_turn(self.tokenizer, context, self._role, f.text)
            ids, inside, _ = encode_with_span(self.tokenizer, turn.segment, turn.start, turn.end)
            if self.config.mode == "reference":
                fb = self.tokenizer(f.text)["input_ids"]  # the reference code: includes BOS if the tokenizer adds one
                j = len(ids) - len(fb)  # segment index of the read position
                if j < -1:
                    raise FinealignError(f"reference mode: follow-up {f.text!r} is longer than its rendered turn")
                ps = tuple((j + 1, int(t)) for t in fb)
            else:
                ps = tuple((s, int(ids[s])) for s in range(len(ids)) if inside[s])
            if not ps:
                raise FinealignError(f"follow-up {f.text!r} has no tokens to score under this tokenizer")
            segments.append(tuple(int(t) for t in ids))
            pairs.append(ps)
        # A follow-up's tokens after the last one whose output is read change nothing that is read
        # (causal attention), so the tree holds each follow-up only up to that token.
        tree = build_prefix_tree([(ROOT,) + s[: max(p for p, _ in ps)] for s, ps in zip(segments, pairs)])
        gather = build_gather_plan([[(tree.paths[i][p], t) for p, t in ps] for i, ps in enumerate(pairs)])
        return _Plan(tuple(segments), tuple(pairs), tree, ancestor_mask(tree.parent), gather,
                     max(len(s) for s in segments))

    def _fit(self, ids: list[int], plan: _Plan, what: str) -> list[int]:
        """Drop the oldest context tokens so that context + the longest follow-up fit the window."""
        keep = self.max_length - plan.max_segment
        if keep < 2:
            raise FinealignError(f"max_length {self.max_length} leaves no room for a context before the follow-ups")
        if len(ids) > keep:
            warn_truncated(self.stats, what, len(ids) - keep, self.max_length)
            ids = ids[-keep:]
        if len(ids) < 2:
            raise FinealignError(f"{what}: the rendered context has fewer than 2 tokens")
        return ids

    # ------------------------------------------------------------ model passes

    @torch.no_grad()
    def _tree_values(self, contexts: list[list[int]], plan: _Plan) -> torch.Tensor:
        """(B, F) per-follow-up values: every context encoded once, all follow-ups in one tree pass."""
        dev, dtype = self.model.device, self.model.dtype
        b = len(contexts)
        lens = torch.tensor([len(c) - 1 for c in contexts])  # the last token becomes the tree root
        ids, valid, _ = pad_right([c[:-1] for c in contexts], self.tokenizer.pad_token_id or 0)  # (B, Lc)
        valid = valid.bool()
        out = self.model(input_ids=ids.to(dev), attention_mask=valid.long().to(dev), use_cache=True, logits_to_keep=1)
        tree_ids = plan.tree.tokens[None].repeat(b, 1)
        tree_ids[:, 0] = torch.tensor([c[-1] for c in contexts])
        mask = packed_attention_mask(valid, plan.allowed, dtype)
        pos = tree_position_ids(lens, plan.tree.depth)
        out2 = self.model(input_ids=tree_ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                          **cache_kwargs(self.model, output_cache(out)), use_cache=True,
                          logits_to_keep=plan.gather.rows.to(dev))
        g = plan.gather
        vals = gather_values(out2.logits, GatherPlan(g.rows, g.row_of.to(dev), g.targets.to(dev), g.seq),
                             log_probs=self.config.mode != "reference").cpu()
        return segment_mean(vals, g.seq, len(plan.segments))

    @torch.no_grad()
    def _naive_values(self, contexts: list[list[int]], plan: _Plan) -> torch.Tensor:
        """(B, F) the straightforward way: one full forward pass per (context, follow-up), batch 1."""
        dev = self.model.device
        out = torch.zeros(len(contexts), len(plan.segments), dtype=torch.float32)
        for b, ctx in enumerate(contexts):
            for f, (seg, ps) in enumerate(zip(plan.segments, plan.pairs)):
                ids = torch.tensor([ctx + list(seg)], device=dev)
                logits = self.model(input_ids=ids, use_cache=False).logits[0].float()
                rows = torch.tensor([len(ctx) - 1 + p for p, _ in ps], device=dev)
                tgt = torch.tensor([t for _, t in ps], device=dev)
                v = logits[rows, tgt]
                if self.config.mode != "reference":
                    v = v - torch.logsumexp(logits[rows], dim=-1)
                out[b, f] = v.mean().cpu()
        return out

    def _values(self, contexts: list[list[int]], plan: _Plan) -> torch.Tensor:
        run = self._tree_values if self.config.strategy == "tree" else self._naive_values
        return run(contexts, plan)

    # ------------------------------------------------------------ public API

    def followup_values(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        """(B, F) l(f) for every response and follow-up (prior subtracted in ``pmi`` mode)."""
        if len(prompts) != len(responses):
            raise FinealignError(f"{len(prompts)} prompts but {len(responses)} responses")
        rows: list[tuple[list[int], _Plan]] = []
        for i, (p, r) in enumerate(zip(prompts, responses)):  # an empty response is scored as it is
            if not isinstance(r, str):
                raise FinealignError(f"response {i}: expected a string, got {type(r).__name__}")
            ctx, plan = self._plan_for(self._context(p, r))
            rows.append((self._fit(ctx, plan, f"response {i} with its prompt"), plan))
        values = torch.zeros(len(rows), len(self.followups))
        # batches by length (core.batching): a long context runs alone instead of padding the others to it
        for chunk in length_batches([len(r[0]) for r in rows], self.config.batch_size):
            for plan in {id(rows[i][1]): rows[i][1] for i in chunk}.values():  # normally one plan
                idx = [i for i in chunk if rows[i][1] is plan]
                values[idx] = self._values([rows[i][0] for i in idx], plan)
        if self.config.mode == "pmi":
            values = values - self._priors(prompts)
        self.stats.scored += len(rows)
        return values

    def _priors(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """(B, F) l(f | prompt, empty response), cached per distinct prompt."""
        keys = [json.dumps(p, sort_keys=True, ensure_ascii=False) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._prior))
        if todo:
            if len(self._prior) + len(todo) > 50_000:
                self._prior.clear()
            by_key = dict(zip(keys, prompts))
            fit = []
            for k in todo:
                ctx, plan = self._plan_for(self._context(by_key[k], ""))
                fit.append((k, self._fit(ctx, plan, "prompt (pmi prior)"), plan))
            for batch in length_batches([len(c[1]) for c in fit], self.config.batch_size):
                chunk = [fit[i] for i in batch]
                for plan in {id(c[2]): c[2] for c in chunk}.values():
                    part = [c for c in chunk if c[2] is plan]
                    for (k, _, _), v in zip(part, self._values([c[1] for c in part], plan)):
                        self._prior[k] = v
        return torch.stack([self._prior[k] for k in keys])

    def score_details(self, prompts: Sequence[Prompt], responses: Sequence[str], *,
                      per_followup: bool = False) -> list[FLRResult]:
        """Score, per-dimension scores and (``per_followup``) every follow-up's value."""
        values = self.followup_values(prompts, responses)
        agg = aggregate_followups(values.double(), self._dim_index, self._positive, len(self.followups.dims))
        return [FLRResult(float(agg.total[b]), {d: float(agg.per_dim[b, k]) for k, d in enumerate(self.followups.dims)},
                          tuple(float(v) for v in values[b]) if per_followup else None)
                for b in range(values.shape[0])]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        return [r.score for r in self.score_details(prompts, responses)]

    def close(self) -> None:
        self.model = None
