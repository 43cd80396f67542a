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

import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ModelError
from ..paths import models_dir
from .default import BUILTINS, DEFAULT_MODEL, pull

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


def check_gguf(path: Path) -> None:
    """Raise ``ModelError`` naming ``path`` if it is not a complete GGUF file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelError(f"{path}: cannot read GGUF file: {e}") from e
    if len(head) < 8 or head[:4] != b"GGUF":
        raise ModelError(f"{path}: not a GGUF file (bad magic bytes {head[:4]!r})")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in (2, 3):
        raise ModelError(f"{path}: unsupported GGUF version {version}")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        size = path.stat().st_size
        if len(reader.tensors) == 0:
            raise ModelError(f"{path}: GGUF file holds no tensors (truncated or empty)")
        for t in reader.tensors:
            end = int(t.data_offset) + int(t.n_bytes)
            if end > size:
                raise ModelError(f"{path}: truncated GGUF: tensor {t.name} ends at byte {end} > file size {size}")
    except ModelError:
        raise
    except Exception as e:  # the reader raises many types on corrupt files
        raise ModelError(f"{path}: corrupt or truncated GGUF file: {type(e).__name__}: {e}") from e


def gguf_to_pretrained(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` to an fp32 Hugging Face directory ``out`` (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    check_gguf(gguf)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:
        raise ModelError(f"{gguf}: could not load the GGUF with transformers: {type(e).__name__}: {e}") from e
    # save_pretrained refuses a GGUF-loaded model while it carries its quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _gguf_cache_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return models_dir() / "gguf" / f"{gguf.stem}-{key}"


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
        cache = _gguf_cache_dir(path)
        if not (cache / "config.json").exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=".gguf-", dir=cache.parent))
            try:
                gguf_to_pretrained(path, stage)
                os.rename(stage, cache)
            finally:
                if stage.exists():
                    shutil.rmtree(stage, ignore_errors=True)
        return str(cache)
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{spec}: not a model directory or a .gguf file")
        if not ((path / "config.json").exists() or (path / "adapter_config.json").exists()):
            raise ModelError(f"{spec}: directory has no config.json or adapter_config.json")
        return str(path)
    if spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") > 1:
        raise ModelError(f"{spec}: no such file or directory")
    return spec  # a hub id


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
    try:
        return cls.from_pretrained(src, local_files_only=True, **kw)
    except Exception as local_err:
        if Path(src).exists() or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ModelError(f"{spec}: could not load: {type(local_err).__name__}: {local_err}") from local_err
        try:
            return cls.from_pretrained(src, **kw)
        except Exception as e:
            raise ModelError(
                f"{spec}: not a built-in model ({', '.join(BUILTINS)}), a local directory or a .gguf "
                f"file, and not in the Hugging Face cache nor reachable on the hub ({type(e).__name__})"
            ) from e


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
        model = PeftModel.from_pretrained(base, src, is_trainable=trainable_adapter)
    else:
        model = _from_pretrained(AutoModelForCausalLM, spec, src, dtype=torch_dtype)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=lora.target_modules if isinstance(lora.target_modules, str)
                         else list(lora.target_modules), task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
    model.to(dev)
    model.eval()
    return model, tok
