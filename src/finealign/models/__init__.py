"""Model loading: built-in default, GGUF files, local directories, hub ids; LoRA; tiny test models."""

from .default import BUILTINS, DEFAULT_MODEL, is_pulled, pull
from .gguf import check_gguf
from .loading import LoraOptions, load_model, load_tokenizer, resolve_device, resolve_dtype, resolve_spec

__all__ = ["BUILTINS", "DEFAULT_MODEL", "LoraOptions", "check_gguf", "is_pulled", "load_model",
           "load_tokenizer", "pull", "resolve_device", "resolve_dtype", "resolve_spec"]
