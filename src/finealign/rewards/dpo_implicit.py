"""The implicit per-token reward of a DPO-trained policy as a token scorer.

A policy trained with DPO defines a reward at every token (Rafailov et al. 2024, "From r to Q*: Your
Language Model is Secretly a Q-Function", eq. 9; used as a dense PPO reward by RTO, Zhong et al. 2024,
"DPO Meets PPO: Reinforced Token Optimization for RLHF")::

    r_t = beta * (log pi_dpo(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t))

and the sequence score is ``sum_t r_t``, DPO's implicit reward of the whole response (up to the
prompt-only term, which cancels in every comparison of two responses to one prompt). Tokens are the
response's own text tokens under the policy's tokenizer, in the (prompt, response) rendering of
``direct`` (``data.chat.encode_pair``: chat template, closed assistant turn; the closing template
tokens are conditioned on, not scored); offsets are relative to the response text.

Spec: ``dpo-implicit:POLICY[,ref=MODEL][,beta=0.1][,dtype=...][,device=...][,batch_size=4][,max_length=N]``.
``POLICY`` is a model spec, typically the output folder of ``finealign train dpo``. The reference:
``ref=MODEL``; without it, a PEFT adapter's base with the adapters off, else the ``model`` recorded in
``POLICY/finealign_train.json``. Use the ``beta`` the policy was trained with.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

from ..data.records import Prompt
from ..errors import FinealignError
from .base import TokenScorer, TokenScores, register_scorer
from .options import DPOImplicitOptions
from .direct import DirectConfig, DirectScorer


def default_reference(policy: str) -> str | None:
    """The starting model recorded by ``finealign train dpo`` in ``POLICY/finealign_train.json`` (or None)."""
    p = Path(policy) / "finealign_train.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))["config"]["model"]
    except (ValueError, KeyError, TypeError):
        return None


class DPOImplicitScorer(TokenScorer):
    """``r_t = beta * (log pi_dpo(y_t|.) - log pi_ref(y_t|.))`` per response token; score = their sum."""

    def __init__(self, policy: str, *, ref: str | None = None, beta: float = 0.1, dtype: str = "float32",
                 device: str = "auto", batch_size: int = 4, max_length: int | None = None,
                 model=None, tokenizer=None, ref_model=None):
        from ..models import load_model

        if not beta > 0:
            raise FinealignError(f"dpo-implicit scorer: beta must be positive, got {beta}")
        self.beta = float(beta)
        if model is None:
            model, tokenizer = load_model(policy, dtype=dtype, device=device)
        self.adapter_ref = ref is None and ref_model is None and hasattr(model, "disable_adapter")
        if ref_model is None and not self.adapter_ref:
            ref = ref or default_reference(policy)
            if ref is None:
                raise FinealignError(f"dpo-implicit scorer: {policy} is no LoRA adapter and records no starting model; "
                                     "give the reference: dpo-implicit:POLICY,ref=MODEL")
            ref_model, _ = load_model(ref, dtype=dtype, device=device)
        if ref_model is not None:
            vp, vr = (getattr(getattr(m, "config", None), "vocab_size", None) for m in (model, ref_model))
            if vp is not None and vr is not None and vp != vr:
                raise FinealignError(f"dpo-implicit scorer: policy and reference vocabularies differ ({vp} vs {vr})")
        cfg = DirectConfig(model=policy, dtype=dtype, device=device, batch_size=batch_size, max_length=max_length)
        self.policy = DirectScorer(cfg, model=model, tokenizer=tokenizer)
        self.ref = None if ref_model is None else DirectScorer(cfg, model=ref_model, tokenizer=tokenizer)
        self.name = f"dpo-implicit:{policy},beta={beta}" + (f",ref={ref}" if ref else "")

    def score_tokens(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[TokenScores]:
        pol = self.policy.score_tokens(prompts, responses)
        if self.ref is not None:
            ref = self.ref.score_tokens(prompts, responses)
        else:
            with (self.policy.model.disable_adapter() if self.adapter_ref else nullcontext()):
                ref = self.policy.score_tokens(prompts, responses)
        out = []
        for a, b in zip(pol, ref):
            if a.token_ids != b.token_ids:  # same tokenizer and text: cannot differ
                raise FinealignError("dpo-implicit scorer: policy and reference scored different tokens")
            out.append(TokenScores(a.token_ids, a.offsets,
                                   [self.beta * (x - y) for x, y in zip(a.rewards, b.rewards)]))
        return out

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        return [float(sum(t.rewards)) for t in self.score_tokens(prompts, responses)]

    def close(self) -> None:
        self.policy = self.ref = None


@register_scorer("dpo-implicit", options=DPOImplicitOptions)
def _dpo_implicit(arg=None, model=None, tokenizer=None, **opts) -> DPOImplicitScorer:
    if not arg:
        raise FinealignError("dpo-implicit scorer needs the DPO policy: dpo-implicit:POLICY[,ref=MODEL][,beta=0.1]")
    return DPOImplicitScorer(arg, model=model, tokenizer=tokenizer, **opts)
