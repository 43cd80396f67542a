"""verl 0.9's agent-loop manager with finealign's per-token rewards in ``rm_scores``.

verl's default reward path streams rewards from its agent loop, one float per response. Set
``actor_rollout_ref.rollout.agent.agent_loop_manager_class=finealign.integrations.verl_agent_loop.FinealignAgentLoopManager``
(next to ``FinealignRewardLoopManager`` as the reward manager): the reward workers then send each
response's per-token rewards as a reward-extra field, and this manager puts them into ``rm_scores``
(``integrations.verl.rebuild_rm_scores``) before verl's trainer reads it. Its own module because verl's
agent loop imports rollout dependencies (``cachetools``, ...) that verl's reward managers do not need.
"""

from __future__ import annotations

from verl import DataProto
from verl.experimental.agent_loop import AgentLoopManager
from verl.utils.ray_utils import auto_await

from .token_rewards import estimator_warning
from .verl import _options, _warn_once, rebuild_rm_scores


class FinealignAgentLoopManager(AgentLoopManager):
    """verl's ``AgentLoopManager``; its outputs carry per-token ``rm_scores``."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        gran = str(_options(config).get("finealign_granularity", "token"))
        msg = estimator_warning(config.algorithm.get("adv_estimator", None), gran)
        if msg:
            _warn_once(msg)

    @auto_await
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        return rebuild_rm_scores(await super().generate_sequences(prompts))
