"""Any Hugging Face sequence-classification reward model as a scorer.

``seqcls:PATH_OR_HUB_ID[,label=0][,dtype=float32][,device=auto][,batch_size=8][,max_length=N]``.
The (prompt, response) is rendered by ``data.chat.render_pair``: the tokenizer's chat template with
the assistant turn closed (reward models such as Skywork-Reward or ArmoRM expect this); a prompt
that already carries the template is used as it is; a tokenizer without a template gets
``"{prompt}\n\n{response}"``. An empty response is scored as it is. The score is the logit of
class ``label`` (a single-logit reward head: the only one); with two classes and no ``label``,
``logit[1] - logit[0]``. Too-long inputs lose their oldest tokens (the response's end is kept),
with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.batching import length_batches
from ..data.chat import pad_right, render_pair
from ..data.records import Prompt
from ..errors import FinealignError, ModelError
from .base import Scorer, register_scorer
from .options import SeqClsOptions
from .lm_common import ScoreStats, warn_truncated


@dataclass(frozen=True)
class SeqClsConfig:
    """Sequence-classifier scorer; ``label`` None = the only logit (or logit 1 - logit 0 with two)."""

    model: str
    label: int | None = None
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 8
    max_length: int | None = None

    def __post_init__(self):
        if not self.model:
            raise FinealignError("seqcls scorer needs a model: seqcls:PATH_OR_HUB_ID")
        if self.batch_size < 1:
            raise FinealignError(f"batch_size must be >= 1, got {self.batch_size}")


class SeqClsScorer(Scorer):
    name = "seqcls"

    def __init__(self, config: SeqClsConfig, model=None, tokenizer=None):
        self.config = config
        if model is None:
            model, tokenizer = self._load(config)
        self.model, self.tokenizer = model, tokenizer
        n = int(getattr(model.config, "num_labels", 1))
        if config.label is not None and not 0 <= config.label < n:
            raise FinealignError(f"seqcls: label={config.label} but the model has {n} output(s)")
        self.num_labels = n
        if getattr(model.config, "pad_token_id", None) is None:  # the head pools the last non-pad token
            model.config.pad_token_id = tokenizer.pad_token_id
        limit = config.max_length or getattr(model.config, "max_position_embeddings", None) or 2048
        self.max_length = int(limit)
        self.stats = ScoreStats()

    @staticmethod
    def _load(cfg: SeqClsConfig):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ..models.loading import resolve_device, resolve_dtype, resolve_spec

        src = resolve_spec(cfg.model)
        try:
            tok = AutoTokenizer.from_pretrained(src)
            model = AutoModelForSequenceClassification.from_pretrained(src, dtype=resolve_dtype(cfg.dtype))
        except Exception as e:
            raise ModelError(f"{cfg.model}: cannot load a sequence-classification model: {type(e).__name__}: {e}") from e
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        model.to(resolve_device(cfg.device)).eval()
        return model, tok

    def _text(self, prompt: Prompt, response: str) -> str:
        return render_pair(self.tokenizer, prompt, response).text  # data.chat: the closed assistant turn

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise FinealignError(f"{len(prompts)} prompts but {len(responses)} responses")
        encoded = []
        for i, (p, r) in enumerate(zip(prompts, responses)):
            ids = self.tokenizer(self._text(p, r), add_special_tokens=False)["input_ids"]
            if len(ids) > self.max_length:
                warn_truncated(self.stats, f"response {i} with its prompt", len(ids) - self.max_length, self.max_length)
                ids = ids[-self.max_length:]
            encoded.append(ids)
        out: list[float] = [0.0] * len(encoded)
        dev = self.model.device
        pad = self.tokenizer.pad_token_id or 0
        # batches by length (core.batching): a long item runs alone instead of padding the others to it
        for batch in length_batches([len(e) for e in encoded], self.config.batch_size):
            chunk = [encoded[i] for i in batch]
            ids, attn, _ = pad_right(chunk, pad)  # right padding: the head reads the last non-pad token
            logits = self.model(input_ids=ids.to(dev), attention_mask=attn.to(dev)).logits.float().cpu()
            if self.config.label is not None:
                vals = logits[:, self.config.label]
            elif self.num_labels == 2:
                vals = logits[:, 1] - logits[:, 0]
            else:
                vals = logits[:, 0]
            for i, v in zip(batch, vals):
                out[i] = float(v)
        self.stats.scored += len(encoded)
        return out

    def close(self) -> None:
        self.model = None


@register_scorer("seqcls", options=SeqClsOptions)
def _seqcls(arg=None, model=None, tokenizer=None, *, label=None, dtype="float32", device="auto", batch_size=8,
            max_length=None):
    if not arg and model is None:
        raise FinealignError("seqcls scorer needs a model: seqcls:PATH_OR_HUB_ID")
    cfg = SeqClsConfig(model=arg or "<given>", label=label, dtype=dtype, device=device, batch_size=batch_size,
                       max_length=max_length)
    return SeqClsScorer(cfg, model=model, tokenizer=tokenizer)
