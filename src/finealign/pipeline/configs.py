"""Settings of the stages whose verb has no config dataclass of its own (generate, score, edit, report),
and the few settings a verb takes beside its config (label's input and scorer, winrate's prompt limit).

Each field mirrors the verb's flag of the same name (``--max-new-tokens`` = ``max_new_tokens``). The
stages whose verb has a config dataclass (``PPOConfig``, ``TokenRMConfig``, ``PrefTrainConfig``, ...)
take that dataclass's fields directly; see :mod:`finealign.pipeline.stages`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DeviceArgs, ModelLoadArgs, SamplingArgs, Settings, non_negative, positive, setting, unit_interval
from ..engine.shards import EngineArgs


@dataclass(kw_only=True)
class GenerateStage(EngineArgs, ModelLoadArgs, SamplingArgs):
    """``finealign generate``: k sampled responses per prompt (``generation.generate_file``; with
    ``engine: ray``, ``pipeline.sharded.generate_file_sharded``). Model, dtype, device and sampling
    settings are the verbs' common parts (``config.ModelLoadArgs``, ``config.SamplingArgs``)."""

    prompts: str = setting(None, reads="file", required=True, help="Prompt-bearing file (.jsonl/.json/.csv/.parquet).")
    limit: int | None = setting(None, check=positive, help="Use the first N prompts of the file (unset: all).")
    k: int = setting(4, check=positive, help="Completions per prompt.")
    seed: int = setting(0, help="Base seed; sample j of prompt p is seeded from (seed, p, j).")
    batch_size: int = setting(8, identity=False, check=positive, help="Sequences decoded together.")


@dataclass(kw_only=True)
class ScoreStage(EngineArgs):
    """``finealign score``: add a scorer's score to every record (``rewards.score_file.score_file``)."""

    input: str = setting(None, reads="file", required=True, help="Response, pair or rating records.")
    scorer: str = setting(None, reads="scorer", required=True,
                          help="Scorer spec, e.g. flr:MODEL, direct:MODEL, token-rm:DIR, length.")
    chunk: int = setting(8, identity=False, check=positive, help="Records scored (and appended) per step.")


@dataclass(kw_only=True)
class LabelInputs(EngineArgs):
    """``finealign label``'s arguments beside its ``LabelConfig``: what to label and with which scorer."""

    input: str = setting(None, reads="file", required=True,
                         help="Responses from a generate stage (prompt_id, sample, prompt, "
                              "completion).")
    scorer: str = setting(None, reads="scorer", required=True, help="Scorer spec, e.g. flr:smollm2-135m-instruct.")


@dataclass(kw_only=True)
class EngineStage(EngineArgs):
    """``finealign eval rm``'s settings beside its ``EvalConfig``: where the scoring runs (``--engine``)."""


@dataclass(kw_only=True)
class EditStage(DeviceArgs):
    """``finealign edit``: minimal edits of rejected responses (``edits.run.run_edits``)."""

    input: str = setting(None, reads="file", required=True,
                         help="Pairs (the rejected response is edited), responses or edits.")
    editor: str = setting("local:smollm2-135m-instruct", reads="editor", help="local:MODEL_SPEC or openai:MODEL.")
    base_url: str | None = setting(None, help="Endpoint of an openai:MODEL editor (default: $OPENAI_BASE_URL).")
    concurrency: int = setting(4, identity=False, check=positive, help="Requests in flight at once (openai editor).")
    retries: int = setting(4, identity=False, check=non_negative, help="Retries per request on 429, 5xx, timeouts.")
    timeout: float = setting(60.0, identity=False, check=positive, help="Seconds per request (openai editor).")
    backoff: float = setting(1.0, identity=False, check=non_negative,
                             help="First backoff in seconds; doubles per retry.")
    max_ratio: float = setting(0.5, check=unit_interval, help="Minimality guard: largest allowed edit ratio.")
    on_violation: str = setting("flag", choices=("flag", "drop"), help="flag (keep, marked) | drop.")
    limit: int | None = setting(None, check=positive, help="Edit only the first N input records.")
    template: str = setting("v1", help="Editing prompt version.")
    temperature: float = setting(0.0, check=non_negative, help="0 = greedy.")
    max_new_tokens: int = setting(1024, check=positive, help="Longest edit, in tokens.")
    batch_size: int = setting(4, identity=False, check=positive, help="Sequences decoded together (local editor).")


@dataclass(kw_only=True)
class WinrateInputs(Settings):
    """A pipeline-only setting of the winrate stage: evaluate on the first N prompts."""

    limit: int | None = setting(None, check=positive, help="Use the first N prompts of `prompts` (unset: all).")


@dataclass(kw_only=True)
class ReportStage(Settings):
    """``finealign report``: one self-contained HTML page of the run (``report.build_report``)."""

    title: str | None = setting(None, help="Page title (default: the recipe's name).")
    samples: int = setting(3, check=non_negative, help="Sample outputs shown per win-rate evaluation.")
    heatmap: int = setting(3, check=non_negative, help="Responses shown in the token-reward heatmap (0: none).")
    max_chars: int = setting(1200, check=positive, help="Cut shown texts to this many characters.")
