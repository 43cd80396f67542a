"""Adapters to RL engines, all following the token-reward contract of docs/token-rewards.md.

* ``integrations.token_rewards``: the engine-independent part: a finealign scorer's rewards on an
  engine's response token ids, ``(B, T)`` float32, the stop token's terminal reward, truncated
  responses counted, a failing record named (no engine import);
* ``integrations.verl``: verl 0.9 reward managers (needs ``verl`` installed);
* ``serve.reward_server``: ``finealign serve --reward SPEC``, OpenRLHF's remote reward model;
* ``rewards.trl_adapter.as_reward_func``: TRL GRPO/RLOO reward functions.
"""
