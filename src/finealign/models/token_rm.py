"""The token-level reward model: a causal-LM backbone with a scalar head on every position.

``r_t = head(h_t)`` where ``h_t`` is the backbone's last hidden state at position t (the LM head
is never computed). The backbone is trained fully, through LoRA adapters, or only in its top
``top_layers`` decoder layers (plus the final norm); the head is always trained.

On disk (Hugging Face formats)::

    DIR/token_rm_config.json        {"format": "finealign-token-rm", "version": 1, "base_model": SPEC, "mode": ...}
    DIR/token_rm_head.safetensors   head.weight (1, H), head.bias (1,)
    DIR/adapter/                    LoRA mode: a PEFT adapter (adapter_config.json + safetensors)
    DIR/backbone/                   full / top-layers mode: the whole causal LM (save_pretrained)
    DIR/tokenizer*                  the tokenizer

``load_token_rm(DIR)`` reloads it; the rewards are identical to the saved model's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .loading import LoraOptions, load_model

CONFIG_NAME = "token_rm_config.json"
HEAD_NAME = "token_rm_head.safetensors"
FORMAT = "finealign-token-rm"
MODES = ("full", "lora")


@dataclass(frozen=True)
class TokenRMSpec:
    """What a saved token RM is: base model spec, training mode, trained top layers (0 = all)."""

    base_model: str
    mode: str = "lora"
    top_layers: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    hidden_size: int = 0
    reward: str = "logit"  # core.token_rm.REWARD_KINDS: how the head output becomes a reward

    def __post_init__(self):
        from ..core.token_rm import REWARD_KINDS

        if self.reward not in REWARD_KINDS:
            raise ValueError(f"reward must be one of {', '.join(REWARD_KINDS)}, got {self.reward!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.top_layers < 0:
            raise ValueError(f"top_layers must be >= 0, got {self.top_layers}")


def _decoder_layers(lm) -> nn.ModuleList:
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise ModelError(f"{type(base).__name__}: cannot find the decoder layers for top_layers")
    return layers


class TokenRewardModel(nn.Module):
    """Backbone + linear head: ``forward(input_ids, attention_mask) -> rewards (B, T)``."""

    def __init__(self, lm, spec: TokenRMSpec, head: nn.Linear | None = None):
        super().__init__()
        self.lm = lm
        self.spec = spec
        hidden = lm.config.hidden_size if not hasattr(lm, "get_base_model") else lm.get_base_model().config.hidden_size
        self.head = head if head is not None else nn.Linear(hidden, 1)
        if head is None:
            # small: hidden states of a pretrained LM have norms of ~10-50, so a 1/sqrt(H) init gives
            # summed rewards of +-10 at step 0; a near-zero head starts every margin near 0
            nn.init.normal_(self.head.weight, std=1e-3)
            nn.init.zeros_(self.head.bias)

    @property
    def decoder(self):
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        return base.get_decoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position rewards (B, T) for ``input_ids`` (B, T) (right or left padded)."""
        out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        h = out.last_hidden_state
        return self.head(h.to(self.head.weight.dtype)).squeeze(-1)

    def token_rewards(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-position rewards (B, T): the head output made a reward by the spec's kind
        (``core.token_rm.token_rewards_from_head``; ``forward`` is the head output that training fits)."""
        from ..core.token_rm import token_rewards_from_head

        return token_rewards_from_head(self(input_ids, attention_mask), self.spec.reward)

    def set_trainable(self) -> None:
        """Freeze everything the spec does not train (the head is always trainable)."""
        lm = self.lm
        if self.spec.mode == "full":
            for p in lm.parameters():
                p.requires_grad_(self.spec.top_layers == 0)
            if self.spec.top_layers:
                layers = _decoder_layers(lm)
                for layer in list(layers)[-self.spec.top_layers:]:
                    for p in layer.parameters():
                        p.requires_grad_(True)
                norm = getattr(self.decoder, "norm", None)
                if norm is not None:
                    for p in norm.parameters():
                        p.requires_grad_(True)
            # the LM head is never used: keep it out of the optimizer
            out_emb = lm.get_output_embeddings()
            if out_emb is not None and out_emb.weight is not lm.get_input_embeddings().weight:
                out_emb.weight.requires_grad_(False)
        # lora: PEFT already froze the base and left the adapters trainable
        for p in self.head.parameters():
            p.requires_grad_(True)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trainable tensors by name (for small checkpoints)."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        missing = [n for n in state if n not in params]
        if missing:
            raise ModelError(f"checkpoint holds unknown parameters: {missing[:3]}")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def save(self, out: str | Path, tokenizer=None) -> Path:
        """Write the model to ``out`` in Hugging Face formats (see the module docstring)."""
        from safetensors.torch import save_file

        from ..quiet import quiet_library_output

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with quiet_library_output():  # no "Writing model shards" bar
            if self.spec.mode == "lora":
                self.lm.save_pretrained(out / "adapter")
            else:
                self.lm.save_pretrained(out / "backbone")
                if tokenizer is not None:
                    tokenizer.save_pretrained(out / "backbone")
        save_file({"weight": self.head.weight.detach().contiguous().cpu(),
                   "bias": self.head.bias.detach().contiguous().cpu()}, str(out / HEAD_NAME))
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        cfg = {"format": FORMAT, "version": 1, **asdict(self.spec)}
        (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
        return out


def is_token_rm_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def new_token_rm(base_model: str, *, mode: str = "lora", top_layers: int = 0, lora: LoraOptions | None = None,
                 dtype: str = "float32", device: str | None = "cpu", seed: int | None = None, reward: str = "logit"):
    """A fresh token RM on ``base_model``: ``(TokenRewardModel, tokenizer)`` with trainable parts set.
    ``reward``: how its head output becomes a reward (``core.token_rm.REWARD_KINDS``)."""
    spec = TokenRMSpec(base_model=base_model, mode=mode, top_layers=top_layers,
                       lora_r=(lora or LoraOptions()).r, lora_alpha=(lora or LoraOptions()).alpha, reward=reward)
    lm, tok = load_model(base_model, dtype=dtype, device=device, padding_side="right")
    if mode == "lora":
        lm = _add_lora(lm, lora or LoraOptions(), top_layers)
    if seed is not None:
        torch.manual_seed(seed)
    hidden = lm.config.hidden_size
    spec = TokenRMSpec(**{**asdict(spec), "hidden_size": hidden})
    model = TokenRewardModel(lm, spec).to(lm.device)
    model.set_trainable()
    return model, tok


def _add_lora(lm, lora: LoraOptions, top_layers: int):
    from peft import get_peft_model

    layers = None
    if top_layers:
        n = len(_decoder_layers(lm))
        layers = list(range(max(0, n - top_layers), n))
    target = lora.target_modules
    if target == "all-linear" or layers:
        # the LM head is never used by the token RM: adapt the decoder's projections only
        target = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    from ..quiet import quiet_library_output

    with quiet_library_output():  # PEFT calls transformers' deprecated is_gradient_checkpointing
        return get_peft_model(lm, lora.peft_config(task_type=None, target_modules=target, layers_to_transform=layers))


def _reward_kind_from_training(path: Path) -> str:
    """The reward kind of a token RM saved without one, from its ``train_config.json`` loss ("logit" when
    there is none)."""
    from ..core.token_rm import reward_kind_of_loss

    try:
        loss = json.loads((path / "train_config.json").read_text()).get("loss", "")
    except (OSError, ValueError, AttributeError):
        return "logit"
    return reward_kind_of_loss(str(loss))


def load_token_rm(path: str | Path, *, dtype: str = "float32", device: str | None = "cpu", trainable: bool = False):
    """Load a saved token RM: ``(TokenRewardModel, tokenizer)`` in eval mode."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise ModelError(f"{path}: not a token reward model directory (no {CONFIG_NAME})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg_path}: invalid JSON: {e}") from e
    if cfg.get("format") != FORMAT:
        raise ModelError(f"{cfg_path}: format is {cfg.get('format')!r}, expected {FORMAT!r}")
    fields = {k: cfg[k] for k in ("base_model", "mode", "top_layers", "lora_r", "lora_alpha", "hidden_size", "reward")
              if k in cfg}
    if "reward" not in fields:  # saved before the kind was recorded: the training settings say the loss
        fields["reward"] = _reward_kind_from_training(path)
    try:
        spec = TokenRMSpec(**fields)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{cfg_path}: {e}") from e
    if spec.mode == "lora":
        from peft import PeftModel

        if not (path / "adapter" / "adapter_config.json").is_file():
            raise ModelError(f"{path}: LoRA token RM without adapter/adapter_config.json")
        base, tok = load_model(spec.base_model, dtype=dtype, device=device, padding_side="right")
        lm = PeftModel.from_pretrained(base, str(path / "adapter"), is_trainable=trainable)
    else:
        lm, tok = load_model(str(path / "backbone"), dtype=dtype, device=device, padding_side="right")
    if (path / "tokenizer_config.json").exists():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
    sd = load_file(str(path / HEAD_NAME))
    head = nn.Linear(sd["weight"].shape[1], 1)
    with torch.no_grad():
        head.weight.copy_(sd["weight"])
        head.bias.copy_(sd["bias"])
    model = TokenRewardModel(lm, spec, head=head.to(lm.device, dtype=next(lm.parameters()).dtype))
    if trainable:
        model.set_trainable()
    else:
        for p in model.parameters():
            p.requires_grad_(False)
    model.eval()
    return model, tok


# ----------------------------------------------------------------------------------------------
# Encoding a (prompt, response) for the token RM


@dataclass(frozen=True)
class EncodedResponse:
    """One chat-templated (prompt, response) sequence (``data.chat.encode_pair``).

    ``input_ids`` (T,), ending with the response's last token; ``response_mask`` (T,) True on
    response tokens; ``offsets`` (T,) each token's (start, end) in the *response* text
    (prompt/template tokens have end <= 0); ``truncated`` = prompt tokens dropped from the left to
    fit ``max_length``.
    """

    input_ids: list[int]
    response_mask: list[bool]
    offsets: list[tuple[int, int]]
    truncated: int = 0


class TooLong(ValueError):
    """The response alone does not fit the context window."""


def encode_response(tokenizer, prompt, response: str, max_length: int | None = None, *, min_context: int = 8) -> EncodedResponse:
    """``prompt`` (str or messages) and ``response`` as the assistant turn (``data.chat.encode_pair``;
    a prompt that already carries the template is used as it is), with the response's stop token
    (the end of turn, offset ``(len, len)``) as its last response token (``data.chat.with_stop_token``):
    it carries what is judged on the whole response (docs/token-rewards.md). The sequence stops there:
    under causal attention the template tokens after it would change none of the rewards.

    The oldest context is cut from the left when the sequence exceeds ``max_length`` (the count is
    returned in ``truncated``); ``TooLong`` when the response plus ``min_context`` prompt tokens
    does not fit.
    """
    from ..data.chat import encode_pair, with_stop_token

    enc = with_stop_token(encode_pair(tokenizer, prompt, response), len(response), tokenizer.eos_token_id)
    end = max((k for k, m in enumerate(enc.response_mask) if m), default=-1) + 1
    ids, mask = list(enc.input_ids[:end]), list(enc.response_mask[:end])
    offs = [(max(0, s), e) if m else (s, e) for (s, e), m in zip(enc.offsets[:end], mask)]
    cut = 0
    if max_length is not None and len(ids) > max_length:
        n_resp = sum(mask)
        if n_resp + min_context > max_length:
            raise TooLong(f"response has {n_resp} tokens; with {min_context} context tokens it exceeds max_length {max_length}")
        cut = len(ids) - max_length
        ids, mask, offs = ids[cut:], mask[cut:], offs[cut:]
    return EncodedResponse(ids, mask, offs, cut)


def pad_batch(seqs: list[list[int]], pad_id: int, *masks: list[list]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Right-pad ``seqs`` to (N, T): ``(input_ids, attention_mask, [each extra mask as (N, T) bool])``
    (``data.chat.pad_right``)."""
    from ..data.chat import pad_right

    return pad_right(seqs, pad_id, *masks)
