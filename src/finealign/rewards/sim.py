"""The gold reward of a simulated task as a token scorer: ``load_scorer("sim:facts")``.

``score`` is the task's gold sequence score (at most 1.0); ``score_tokens`` returns the response's
word units and its stop unit (``sim.scored_units``: the zero-width ``(len, len)`` that stands for the
end-of-turn token; token ids -1: the gold reward has no tokenizer) with each mention's reward where it
is decided (``Mention.land``: causal, docs/token-rewards.md; what is judged on the whole response on the
stop unit), so the rewards add up to the score and PPO's ``--granularity token`` moves them onto the
policy's tokens by character offsets, the stop unit onto the policy's stop token. Usable as a PPO
reward (the upper bound for a learned reward), as a ``score`` / ``label`` / ``eval`` scorer and as a judge.

The prompt of each response must be one the task generated (``finealign sim make``): the task parses
it back from its text (a message list: its last user turn) and re-renders it; anything else raises
``FinealignError`` naming the prompt. Options: the task's difficulty knobs that change scoring
(``penalty`` for constraints) and ``table=FILE`` (facts: the fact table the prompts were made from).
"""

from __future__ import annotations

from typing import Sequence

from ..data.records import Prompt
from ..errors import FinealignError
from .base import TokenScorer, TokenScores, register_scorer


class SimScorer(TokenScorer):
    """Gold reward of the ``sim`` task ``task`` (see the module docstring)."""

    def __init__(self, task: str, **options):
        from ..sim import make_task

        self.task = make_task(task, options)
        self.name = f"sim:{task}"

    def judgements(self, prompts: Sequence[Prompt], responses: Sequence[str]):
        """The task's ``Judgement`` of each response; ``FinealignError`` for a prompt the task did not generate."""
        if len(prompts) != len(responses):
            raise FinealignError(f"{self.name} scorer: {len(prompts)} prompts but {len(responses)} responses")
        return [self.task.judge_prompt(p, r) for p, r in zip(prompts, responses)]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        return [j.score for j in self.judgements(prompts, responses)]

    def score_tokens(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[TokenScores]:
        from ..sim import gold_token_rewards, scored_units

        out = []
        for r, j in zip(responses, self.judgements(prompts, responses)):
            offs = scored_units(r)  # an empty response: the stop unit (0, 0) alone
            out.append(TokenScores(token_ids=[-1] * len(offs), offsets=offs, rewards=gold_token_rewards(j, offs)))
        return out


@register_scorer("sim")
def _sim(arg=None, **options) -> SimScorer:
    from ..sim import TASKS

    if not arg:
        raise FinealignError(f"sim scorer needs a task: sim:TASK with TASK one of {', '.join(TASKS)}")
    return SimScorer(arg, **options)
