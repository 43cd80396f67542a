"""finealign scorers as verl 0.9 reward managers: per-token ``token_level_scores`` for fine-grained PPO.

verl carries rewards as a ``(B, T)`` float32 tensor (``rm_scores`` -> ``token_level_scores``, then
``token_level_rewards = token_level_scores - beta * KL`` when ``algorithm.use_kl_in_reward``), T its
response width. Every manager here fills that tensor by the contract of docs/token-rewards.md: each
reward on the token that is the action, the terminal reward on the stop token (the last kept token of a
response cut by ``max_response_length``, counted), zero padding, KL left to verl. A scorer with another
tokenizer than the policy is re-mapped by character offsets (``integrations.token_rewards``).

Three entry points (docs/integrations.md has the configs):

* ``FinealignRewardLoopManager``: verl 0.9's reward-loop manager (``reward.reward_manager.source=importlib``,
  ``module.path=pkg://finealign.integrations.verl``, ``name=FinealignRewardLoopManager``). Its
  ``run_single`` scores one record (concurrent calls are batched); ``assemble_rm_scores`` turns the
  results into ``rm_scores``. verl's default *streaming* reward path (no verl reward model) takes one
  float per response: with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=
  finealign.integrations.verl_agent_loop.FinealignAgentLoopManager`` the per-token rows travel as a
  reward-extra field and that manager rebuilds ``rm_scores`` from them; without it, the response's
  total lands on its last token (a sequence reward) and a warning says so.
* ``FinealignRewardManager``: the batch interface (``AbstractRewardManager``: ``__call__(data,
  return_dict)``) for trainers that call a reward function on the whole batch.
* ``token_level_scores(data, scorer, tokenizer)``: the function both use, on a ``DataProto``.

Options (``reward.reward_kwargs`` in the verl config, or the environment): ``finealign_scorer`` (a scorer
spec, or ``$FINEALIGN_VERL_SCORER``), ``finealign_granularity`` (token | sequence), ``finealign_stop_ids``
(extra ids that end a response), ``finealign_batch_size`` (records per scoring call, default 64).
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Sequence

import torch

from ..errors import FinealignError
from ..generation import stop_token_ids
from ..rewards.base import Scorer, load_scorer
from .token_rewards import EngineRewards, engine_rewards, estimator_warning, to_tensor

try:
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.workers.reward_manager.abstract import AbstractRewardManager
except ImportError as e:  # pragma: no cover - the message is the point
    raise FinealignError(f"finealign.integrations.verl needs verl 0.9 (pip install 'verl>=0.9,<0.10'): {e}") from e

TOKEN_KEY = "finealign_token_rewards"  # reward-extra field carrying a response's per-token rewards (JSON)
AGENT_LOOP_MANAGER = "finealign.integrations.verl_agent_loop.FinealignAgentLoopManager"
_SCORERS: dict[str, Scorer] = {}
_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        warnings.warn(msg, stacklevel=3)


def get_scorer(spec: str | Scorer | None) -> Scorer:
    """The scorer of ``spec`` (or ``$FINEALIGN_VERL_SCORER``), loaded once per process."""
    if isinstance(spec, Scorer):
        return spec
    spec = spec or os.environ.get("FINEALIGN_VERL_SCORER")
    if not spec:
        raise FinealignError("no finealign scorer: set reward.reward_kwargs.finealign_scorer=SPEC in the verl config "
                             "(or $FINEALIGN_VERL_SCORER), e.g. token-rm:runs/rm")
    if spec not in _SCORERS:
        _SCORERS[spec] = load_scorer(spec)
    return _SCORERS[spec]


class Records(NamedTuple):
    """The records of a verl batch as finealign sees them."""

    prompts: list  # chat messages (verl's ``raw_prompt``) or the decoded prompt text
    response_ids: list[list[int]]  # the valid response tokens (stop token included when the response stopped)
    labels: list[str]  # how errors name each record


def _messages(raw) -> list[dict]:
    return [dict(m) for m in list(raw)]


def records(data: DataProto, tokenizer) -> Records:
    """Prompts, valid response ids and record names of a verl batch (``prompts`` (B, P) left-padded,
    ``responses`` (B, T) right-padded, ``attention_mask`` (B, P + T); verl's valid response length is
    ``attention_mask[:, P:].sum()``)."""
    P = data.batch["prompts"].shape[-1]
    mask = data.batch["attention_mask"]
    n_valid = mask[:, P:].sum(-1).tolist()
    n_prompt = mask[:, :P].sum(-1).tolist()
    resp = data.batch["responses"]
    ntb = data.non_tensor_batch
    prompts, ids, labels = [], [], []
    for i in range(len(data)):
        ids.append(resp[i, : int(n_valid[i])].tolist())
        if "raw_prompt" in ntb:
            prompts.append(_messages(ntb["raw_prompt"][i]))
        else:
            p = data.batch["prompts"][i, P - int(n_prompt[i]):].tolist()
            prompts.append(tokenizer.decode(p, skip_special_tokens=False))
        labels.append(_label(ntb, i))
    return Records(prompts, ids, labels)


def _label(ntb: dict, i: int) -> str:
    """``record i (uid=..., data_source=..., index=...)``: what names a record of a verl batch."""
    parts = []
    for key in ("uid", "data_source"):
        if key in ntb:
            parts.append(f"{key}={ntb[key][i]}")
    extra = ntb.get("extra_info")
    if extra is not None and isinstance(extra[i], dict) and "index" in extra[i]:
        parts.append(f"index={extra[i]['index']}")
    return f"record {i}" + (f" ({', '.join(parts)})" if parts else "")


def _stop_ids(tokenizer, extra: Sequence[int] = ()) -> list[int]:
    return sorted(set(stop_token_ids(None, tokenizer)) | {int(x) for x in extra})


def token_level_scores(data: DataProto, scorer: Scorer | str, tokenizer, *, granularity: str = "token",
                       stop_ids: Sequence[int] = ()) -> tuple[torch.Tensor, EngineRewards]:
    """verl's ``token_level_scores`` for a batch: float32 ``(B, T)`` zero-padded, T = ``responses.shape[-1]``,
    and the per-record results (totals, which responses were cut by ``max_response_length``)."""
    rec = records(data, tokenizer)
    res = engine_rewards(get_scorer(scorer), rec.prompts, rec.response_ids, tokenizer,
                         stop_ids=_stop_ids(tokenizer, stop_ids), granularity=granularity, labels=rec.labels)
    return to_tensor(res.rows, data.batch["responses"].shape[-1]), res


def _truncation_note(res: EngineRewards) -> None:
    if res.truncated:
        _warn_once(f"finealign reward: {res.truncated} of {len(res.stopped)} responses were cut by the length limit "
                   "(no stop token): their terminal reward is on the last kept token (counted in "
                   "finealign_truncated)")


class FinealignRewardManager(AbstractRewardManager):
    """The batch reward manager: ``manager(data)`` -> ``(B, T)`` token-level scores.

    ``scorer``: a finealign scorer or spec; ``adv_estimator``: verl's ``algorithm.adv_estimator``, for the
    warning when it discards positions. ``num_examine`` records per call are printed (prompt, response,
    total), like verl's own managers.
    """

    def __init__(self, tokenizer, num_examine: int = 0, compute_score=None, reward_fn_key: str = "data_source", *,
                 scorer: str | Scorer | None = None, granularity: str = "token", stop_ids: Sequence[int] = (),
                 adv_estimator: str | None = None, **_: Any):
        self.tokenizer, self.num_examine, self.reward_fn_key = tokenizer, num_examine, reward_fn_key
        self.scorer = get_scorer(scorer)
        self.granularity, self.stop_ids = granularity, tuple(stop_ids)
        msg = estimator_warning(adv_estimator, granularity)
        if msg:
            _warn_once(msg)

    def __call__(self, data: DataProto, return_dict: bool = False):
        scores, res = token_level_scores(data, self.scorer, self.tokenizer, granularity=self.granularity,
                                         stop_ids=self.stop_ids)
        _truncation_note(res)
        for i in range(min(self.num_examine, len(data))):
            print(f"[finealign reward] record {i}: total {res.totals[i]:.4f}, stopped {res.stopped[i]}")
        if not return_dict:
            return scores
        return {"reward_tensor": scores,
                "reward_extra_info": {"finealign_score": list(res.totals),
                                      "finealign_truncated": [float(not s) for s in res.stopped]}}


def _options(config) -> dict:
    reward = config.get("reward", {}) if hasattr(config, "get") else {}
    kw = reward.get("reward_kwargs", None) if hasattr(reward, "get") else None
    return dict(kw or {})


def _streaming(config) -> bool:
    """verl 0.9 computes rewards in its agent loop, one float per response, unless a verl reward model
    is colocated (``reward.reward_model.enable`` without ``enable_resource_pool``)."""
    rm = config.reward.reward_model
    return not rm.enable or bool(rm.get("enable_resource_pool", False))


def _uses_our_agent_loop(config) -> bool:
    agent = config.actor_rollout_ref.rollout.get("agent", None) or {}
    return agent.get("agent_loop_manager_class", None) == AGENT_LOOP_MANAGER


class _Batcher:
    """Batches concurrent ``run_single`` calls of one worker into one scoring call (run off the event loop,
    on one thread: a model scorer is not re-entrant)."""

    def __init__(self, fn, max_batch: int, window_s: float = 0.01):
        self.fn, self.max_batch, self.window_s = fn, max_batch, window_s
        self.pending: list = []
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finealign-reward")

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((item, fut))
        if len(self.pending) >= self.max_batch:
            self._flush(loop)
        elif len(self.pending) == 1:
            loop.call_later(self.window_s, self._flush, loop)
        return await fut

    def _flush(self, loop) -> None:
        items, self.pending = self.pending, []
        if items:
            loop.create_task(self._run(items, loop))

    async def _run(self, items, loop) -> None:
        try:
            results = await loop.run_in_executor(self.executor, self.fn, [it for it, _ in items])
        except Exception as e:  # noqa: BLE001 - every waiting record fails with the named error
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (_, fut), r in zip(items, results):
            if not fut.done():
                fut.set_result(r)


class FinealignRewardLoopManager(RewardManagerBase):
    """verl 0.9's reward-loop manager: ``run_single`` per record, ``assemble_rm_scores`` for the batch."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, **_: Any):
        super().__init__(config, tokenizer, compute_score)
        opts = _options(config)
        self.scorer = get_scorer(opts.get("finealign_scorer"))
        self.granularity = str(opts.get("finealign_granularity", "token"))
        self.stop_ids = tuple(int(x) for x in (opts.get("finealign_stop_ids") or ()))
        self.streaming = _streaming(config)
        self.rows_in_extra = self.streaming and _uses_our_agent_loop(config) and self.granularity == "token"
        self.batcher = _Batcher(self._score_batch, int(opts.get("finealign_batch_size", 64)))

    @classmethod
    def init_class(cls, config, tokenizer):
        if cls._class_initialized:
            return
        super().init_class(config, tokenizer)
        gran = str(_options(config).get("finealign_granularity", "token"))
        msg = estimator_warning(config.algorithm.get("adv_estimator", None), gran)
        if msg:
            _warn_once(msg)
        if gran == "token" and _streaming(config) and not _uses_our_agent_loop(config):
            _warn_once("verl's streaming reward path takes one float per response: finealign's per-token rewards "
                       "arrive as each response's total on its last token. For per-token rewards set "
                       f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={AGENT_LOOP_MANAGER}")

    def _score_batch(self, items: list) -> list:
        """One scoring call for the records of several ``run_single`` calls (each its own one-record batch,
        of its own widths: merged as records, not as tensors)."""
        recs = [records(d, self.tokenizer) for d in items]
        res = engine_rewards(self.scorer, [p for r in recs for p in r.prompts],
                             [x for r in recs for x in r.response_ids], self.tokenizer,
                             stop_ids=_stop_ids(self.tokenizer, self.stop_ids), granularity=self.granularity,
                             labels=[lb for r in recs for lb in r.labels])
        _truncation_note(res)
        return [(res.rows[i], res.totals[i], res.stopped[i]) for i in range(len(items))]

    async def run_single(self, data: DataProto) -> dict:
        data = data[-1:]  # verl's convention: a multi-sequence trajectory is scored on its last sequence
        row, total, stopped = await self.batcher.submit(data)
        extra = {"finealign_score": total, "finealign_truncated": float(not stopped)}
        if self.rows_in_extra:
            extra[TOKEN_KEY] = json.dumps(row)
        score = total if self.streaming else row
        return {"reward_score": score, "reward_extra_info": extra}

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list) -> torch.Tensor:
        """``rm_scores`` (B, T) float32 from ``run_single``'s ``reward_score`` of each record: a list (that
        response's per-token rewards, from position 0) or a float (on the last valid token)."""
        T = data.batch["responses"].shape[-1]
        P = data.batch["prompts"].shape[-1]
        n_valid = data.batch["attention_mask"][:, P:].sum(-1).tolist()
        rows = []
        for i, s in enumerate(scores):
            if isinstance(s, (list, tuple)):
                if len(s) != int(n_valid[i]):
                    raise FinealignError(f"record {i}: {len(s)} token rewards for {int(n_valid[i])} response tokens")
                rows.append(list(s))
            else:
                n = int(n_valid[i])
                rows.append([0.0] * (n - 1) + [float(s)] if n else [])
        return to_tensor(rows, T)


def rebuild_rm_scores(output: DataProto) -> DataProto:
    """Replace the streaming path's ``rm_scores`` (one total per response on its last token) by the per-token
    rows that ``FinealignRewardLoopManager`` sent in the ``TOKEN_KEY`` reward-extra field, and drop that
    field (a JSON string is no metric). Outputs without it are returned unchanged."""
    ntb = output.non_tensor_batch
    if TOKEN_KEY not in ntb:
        return output
    rows = [json.loads(s) for s in ntb.pop(TOKEN_KEY)]
    P = output.batch["prompts"].shape[-1]
    n_valid = output.batch["attention_mask"][:, P:].sum(-1).tolist()
    for i, r in enumerate(rows):
        if len(r) != int(n_valid[i]):
            raise FinealignError(f"record {i}: {len(r)} token rewards for {int(n_valid[i])} response tokens")
    output.batch["rm_scores"] = to_tensor(rows, output.batch["responses"].shape[-1])
    keys = output.meta_info.get("reward_extra_keys")
    if keys is not None:
        output.meta_info["reward_extra_keys"] = [k for k in keys if k != TOKEN_KEY]
    return output
