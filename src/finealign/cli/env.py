"""``finealign env``: versions, device, dtype support, cache paths."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
from dataclasses import dataclass

from ..config import Settings, setting


def environment() -> dict:
    import torch

    from .. import __version__
    from ..models.default import BUILTINS, builtin_path, is_pulled
    from ..paths import home

    def ver(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    info = {
        "finealign": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: ver(p) for p in ("torch", "transformers", "trl", "peft", "accelerate", "datasets",
                                         "tokenizers", "safetensors", "gguf", "openai", "fastapi")},
        "device": {
            "cuda": cuda,
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "cpu_threads": torch.get_num_threads(),
            "bf16": bool(torch.cuda.is_bf16_supported()) if cuda else True,
            "fp16": cuda,
        },
        "cache": {
            "FINEALIGN_HOME": str(home()),
            "HF_HOME": os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")),
            "models": {n: {"path": str(builtin_path(n)), "pulled": is_pulled(n)} for n in BUILTINS},
        },
    }
    return info


@dataclass(kw_only=True)
class EnvConfig(Settings):
    """Print versions, device and dtype support, and cache paths."""

    json: bool = setting(False, help="Print JSON instead of a table.")


def run_env(cfg: EnvConfig, quiet: bool = False) -> None:
    info = environment()
    if cfg.json:
        print(json.dumps(info, indent=2))
        return
    from rich.table import Table

    from .common import out

    t = Table(show_header=False, box=None)
    t.add_row("finealign", info["finealign"])
    t.add_row("python", f"{info['python']} ({info['platform']})")
    for k, v in info["packages"].items():
        t.add_row(k, v or "[red]not installed[/red]")
    d = info["device"]
    t.add_row("device", ("cuda: " + ", ".join(d["cuda_devices"])) if d["cuda"] else f"cpu ({d['cpu_threads']} threads)")
    t.add_row("dtypes", "float32" + (", bfloat16" if d["bf16"] else "") + (", float16" if d["fp16"] else ""))
    t.add_row("FINEALIGN_HOME", info["cache"]["FINEALIGN_HOME"])
    for n, m in info["cache"]["models"].items():
        t.add_row(f"model {n}", f"{m['path']} ({'pulled' if m['pulled'] else 'not pulled'})")
    out.print(t)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "env", EnvConfig, run_env)
