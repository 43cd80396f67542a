"""``finealign generate``: sample k completions per prompt into a resumable JSONL file.

Flags are generated from :class:`GenerateConfig` (``--config`` reads the same fields from YAML).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ModelLoadArgs, RunArgs, SamplingArgs, part, positive, setting
from ..errors import ConfigError
from ..engine.shards import EngineArgs
from .engine_opts import shard_events

BACKENDS = ("transformers", "vllm")


@dataclass(kw_only=True)
class GenerateConfig(ModelLoadArgs, SamplingArgs, RunArgs, EngineArgs):
    """Sample K completions per prompt (chat template, batched, resumable) into OUT."""

    prompts: str = setting(None, reads="file", short="-p", required=True,
                           help="Prompt-bearing file (.jsonl/.json/.csv/.parquet).")
    out: str = setting(None, identity=False, short="-o", required=True,
                       help="Output JSONL of responses; a rerun resumes it.")
    k: int = setting(4, short="-k", check=positive, help="Completions per prompt.")
    seed: int = setting(0, help="Base seed; sample j of prompt p is seeded from (seed, p, j).")
    batch_size: int = setting(8, identity=False, check=positive, help="Sequences decoded together.")
    overwrite: bool = setting(False, identity=False,
                              help="Start afresh instead of resuming into OUT (a rerun with another model or "
                                   "sampling setting is refused without it).")
    backend: str = setting("transformers", choices=BACKENDS,
                           help="transformers | vllm (needs vLLM: Linux with a CUDA GPU; greedy text equal, sampled "
                                "rows other draws).")

    def validate(self):
        if self.backend == "vllm" and self.engine == "ray":
            raise ConfigError("backend", "vllm runs on one machine without --engine ray (vLLM shards over its own "
                                         "GPUs)")


def run_generate(cfg: GenerateConfig, quiet: bool = False) -> None:
    from ..generation import generate_file
    from .common import console, out as stdout, progress_callback

    console.print(f"loading {cfg.model} ({cfg.dtype}) ...")
    prompts, out = Path(cfg.prompts), Path(cfg.out)
    sampling = dict(k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                    seed=cfg.seed)
    with progress_callback("generate", disable=quiet) as on_progress:
        if cfg.backend == "vllm":
            from ..generation_vllm import vllm_generate_file

            stats = vllm_generate_file(cfg.model, prompts, out, **sampling, dtype=cfg.dtype,
                                       on_progress=on_progress, overwrite=cfg.overwrite)
        elif cfg.engine == "ray":
            from ..engine.sharded import generate_file_sharded

            stats = generate_file_sharded(cfg.model, prompts, out, **sampling, batch_size=cfg.batch_size,
                                          dtype=cfg.dtype, device=cfg.device, engine=part(cfg, EngineArgs),
                                          on_progress=on_progress, on_event=shard_events(), overwrite=cfg.overwrite)
        else:
            stats = generate_file(cfg.model, prompts, out, **sampling, batch_size=cfg.batch_size,
                                  dtype=cfg.dtype, device=cfg.device, on_progress=on_progress,
                                  overwrite=cfg.overwrite)
    stdout.print(
        f"prompts: {stats.prompts}  responses written: {stats.responses_written}  "
        f"skipped (already done): {stats.skipped}  empty: {stats.empty}  "
        f"hit max-new-tokens: {stats.truncated}  tokens/s: {stats.tokens_per_s:.1f}  -> {out}",
        soft_wrap=True, highlight=False)
    if getattr(stats, "prompts_cut", 0):  # docs/long-inputs.md: the oldest context went first
        stdout.print(f"prompts cut to fit the window: {stats.prompts_cut} (their oldest context; "
                     "meta.prompt_cut_tokens on their lines)", soft_wrap=True, highlight=False)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "generate", GenerateConfig, run_generate, resumable=True)
