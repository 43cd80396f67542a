"""GGUF files: validation and one-time dequantization to a Hugging Face directory.

Used by the built-in models (``models.default``) and by GGUF model specs (``models.loading``);
depends on neither, so the two do not import each other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from pathlib import Path

from ..errors import ModelError
from ..paths import models_dir


def check_gguf(path: Path) -> None:
    """Raise ``ModelError`` naming ``path`` if it is not a complete GGUF file (version 2 or 3)."""
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
    """Dequantize ``gguf`` to an fp32 Hugging Face directory ``out`` (model + tokenizer).

    Raises ``ModelError`` for a bad file or one transformers cannot load.
    """
    import torch
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


def cached_gguf_dir(path: Path) -> Path:
    """The dequantized copy of the GGUF file ``path`` (made once, atomically, under ``FINEALIGN_HOME``).

    The cache key is the file's resolved path, size and modification time. Raises ``ModelError``.
    """
    if not path.is_file():
        raise ModelError(f"{path}: GGUF file not found")
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
    return cache
