"""One loader for every model spec.

A spec is one of:

* a built-in name (``smollm2-135m-instruct``, the default; ``tiny-random`` for tests); ``default``
  is an alias of the default model;
* a path to a ``.gguf`` file (dequantized once, cached as safetensors under ``FINEALIGN_HOME``);
* a local directory in Hugging Face format (a full model, or a PEFT adapter whose
  ``adapter_config.json`` names its base);
* a Hugging Face hub id, loaded from the local cache (or the hub when it is reachable).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .default import BUILTINS, DEFAULT_MODEL, pull
from .gguf import cached_gguf_dir

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class LoraOptions:
    """LoRA adapters (PEFT) added to a freshly loaded model."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"

    def __post_init__(self):
        if self.r <= 0:
            raise ValueError(f"lora r must be positive, got {self.r}")

    def peft_config(self, *, task_type: str | None = "CAUSAL_LM", target_modules=None,
                    layers_to_transform: list[int] | None = None):
        """The one ``peft.LoraConfig`` of finealign (policies, TRL wrappers, token RMs).

        ``target_modules`` overrides ``self.target_modules``; ``layers_to_transform`` restricts the
        adapters to those decoder layers; ``task_type=None`` gives a plain ``PeftModel`` (no LM head use).
        """
        from peft import LoraConfig

        target = self.target_modules if target_modules is None else target_modules
        kw = {"layers_to_transform": layers_to_transform} if layers_to_transform else {}
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=target if isinstance(target, str) else list(target),
                          task_type=task_type, **kw)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower()
    if key not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16")
    return DTYPES[key]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_spec(spec: str) -> str:
    """Turn a spec into something ``from_pretrained`` takes: a local directory or a hub id."""
    if not spec or not str(spec).strip():
        raise ModelError("empty model spec")
    spec = str(spec)
    if spec == "default":
        spec = DEFAULT_MODEL
    if spec in BUILTINS:
        return str(pull(spec, log=lambda *_: None) if spec == "tiny-random" else pull(spec))
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"{spec}: GGUF file not found")
        return str(cached_gguf_dir(path))
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{spec}: not a model directory or a .gguf file")
        if not ((path / "config.json").exists() or (path / "adapter_config.json").exists()):
            raise ModelError(f"{spec}: directory has no config.json or adapter_config.json")
        return str(path)
    if spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") > 1:
        raise ModelError(f"{spec}: no such file or directory")
    return spec  # a hub id


def check_model(spec: str) -> str:
    """Fail now, the way ``load_model`` would, when ``spec`` names no loadable model, without loading
    weights: a local directory or GGUF is checked by ``resolve_spec``; a hub id must be in the cache or
    on a reachable hub (its ``config.json`` is read). Returns the resolved source. Raises ``ModelError``
    (one line, with the closest known names for a mistyped one)."""
    src = resolve_spec(spec)
    if not Path(src).exists():
        from transformers import AutoConfig

        _from_pretrained(AutoConfig, spec, src)
    return src


def load_tokenizer(spec: str, *, padding_side: str = "left"):
    """The tokenizer of ``spec``, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    src = resolve_spec(spec)
    if Path(src).is_dir() and (Path(src) / "adapter_config.json").exists() and not (Path(src) / "tokenizer_config.json").exists():
        src = json.loads((Path(src) / "adapter_config.json").read_text())["base_model_name_or_path"]
    tok = _from_pretrained(AutoTokenizer, spec, src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def _from_pretrained(cls, spec: str, src: str, **kw):
    """``cls.from_pretrained`` from local files; from the hub only when the hub is reachable (decided
    once per process, see ``hub.hub_reachable``), so a mistyped name fails in about a second."""
    from ..quiet import quiet_library_output
    from .hub import cached_hub_ids, hub_reachable, unknown_model_error

    try:
        with quiet_library_output():
            return cls.from_pretrained(src, local_files_only=True, **kw)
    except Exception as local_err:
        if Path(src).exists() or src in cached_hub_ids():
            raise ModelError(f"{spec}: could not load: {type(local_err).__name__}: {local_err}") from local_err
        if not hub_reachable():
            raise unknown_model_error(spec, "the Hugging Face hub cannot be reached (offline)") from None
        try:
            with quiet_library_output():
                return cls.from_pretrained(src, **kw)
        except Exception as e:
            raise unknown_model_error(spec, f"the hub has no such model ({type(e).__name__})") from e


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = "cpu",
    lora: LoraOptions | None = None,
    trainable_adapter: bool = False,
    padding_side: str = "left",
):
    """Load a causal LM and its tokenizer: ``(model, tokenizer)``.

    ``lora`` adds fresh LoRA adapters (a PEFT model). A spec that is a PEFT adapter directory
    loads its base model with the adapter (trainable when ``trainable_adapter``).
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    src = resolve_spec(spec)
    tok = load_tokenizer(spec, padding_side=padding_side)
    adapter = Path(src) / "adapter_config.json" if Path(src).is_dir() else None
    if adapter is not None and adapter.exists():
        from peft import PeftModel

        base_spec = json.loads(adapter.read_text())["base_model_name_or_path"]
        base = _from_pretrained(AutoModelForCausalLM, spec, resolve_spec(base_spec), dtype=torch_dtype)
        from ..quiet import quiet_library_output

        with quiet_library_output():
            model = PeftModel.from_pretrained(base, src, is_trainable=trainable_adapter)
    else:
        model = _from_pretrained(AutoModelForCausalLM, spec, src, dtype=torch_dtype)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if lora is not None:
        from peft import get_peft_model

        from ..quiet import quiet_library_output

        with quiet_library_output():  # PEFT calls transformers' deprecated is_gradient_checkpointing
            model = get_peft_model(model, lora.peft_config())
    model.to(dev)
    model.eval()
    return model, tok
