"""The settings dataclasses of the verbs whose library function has no config of its own (generate, score,
label, edit, eval rm, report), and the settings only a recipe stage takes (``limit``).

The command line and the recipe stage of a verb take the same dataclass (the verb table,
:mod:`finealign.verbs`), so a setting has one name, one type and one check in both. The trainers and
``eval winrate`` take their library configs (``PPOConfig``, ``WinrateConfig``, ...) directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import (DeviceArgs, ModelLoadArgs, RunArgs, SamplingArgs, Settings, non_negative, positive, setting)
from ..edits.minimality import ON_VIOLATION
from ..engine.shards import EngineArgs
from ..errors import ConfigError
from ..eval.rm_eval import EvalConfig
from ..train.labeling import LabelConfig

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


def _window(v) -> str | None:
    return None if v >= 8 else f"expected at least 8 tokens, got {v}"


@dataclass(kw_only=True)
class ScoreConfig(EngineArgs):
    """Add reward scores (and FLR's per-dimension scores) to every record of IN, into OUT."""

    input: str = setting(None, reads="file", positional=True, required=True, metavar="IN",
                         help="Response, pair or rating records (.jsonl/.json/.csv/.parquet).")
    out: str = setting(None, identity=False, positional=True, required=True, metavar="OUT",
                       help="Output JSONL; a rerun resumes it.")
    scorer: str = setting(None, reads="scorer", short="-s", required=True,
                          help="Scorer spec, e.g. flr:smollm2-135m-instruct,mode=pmi "
                               "| direct:MODEL | seqcls:PATH | length.")
    chunk: int = setting(8, identity=False, check=positive, help="Records scored (and appended) per step.")
    max_length: int | None = setting(None, check=_window,
                                     help="Token window of the scorer (default: the model's); longer inputs lose their "
                                          "oldest tokens (docs/long-inputs.md).")
    max_chars: int | None = setting(None, check=positive, help="Cut each response to its first N characters before "
                                                               "scoring (CPU budgets; the records keep their text).")
    overwrite: bool = setting(False, identity=False,
                              help="Start afresh instead of resuming into OUT (a rerun with another scorer, or "
                                   "a changed model, is refused without it).")

    def validate(self):
        if self.max_length is not None and self.scorer and "max_length=" in self.scorer:
            raise ConfigError("max_length", f"the scorer spec {self.scorer!r} sets max_length already")

    def scorer_spec(self) -> str:
        """The scorer spec with ``,max_length=N`` added (the scorer's token window is part of the scorer:
        an output scored with another window does not resume)."""
        return self.scorer if self.max_length is None else f"{self.scorer},max_length={self.max_length}"


@dataclass(kw_only=True)
class LabelCommandConfig(LabelConfig, EngineArgs):
    """Label sampled responses with a scorer: DPO pairs (best vs worst) or KTO labels."""

    input: str = setting(None, reads="file", positional=True, required=True, metavar="IN",
                         help="Responses from `finealign generate` (prompt_id, sample, prompt, completion).")
    out: str = setting(None, identity=False, positional=True, required=True, metavar="OUT",
                       help="Output JSONL: prompt/chosen/rejected (dpo) or prompt/completion/label (kto).")
    scorer: str = setting(None, reads="scorer", short="-s", required=True,
                          help="Scorer spec, e.g. flr:smollm2-135m-instruct.")
    overwrite: bool = setting(False, identity=False, help="Empty the score cache OUT.scores.jsonl first (a scorer "
                                                          "whose model changed is refused without it).")


@dataclass(kw_only=True)
class EditConfig(DeviceArgs):
    """Ask an editor for the smallest change that makes each rejected response good; write prompt/original/edited.

    Failures (errors, timeouts, empty replies) go to OUT.failed.jsonl and are retried on the next run;
    the minimality guard flags or drops edits that change nothing or more than --max-ratio of the words.
    The JSON summary goes to stdout. ``dtype``/``device`` apply to a local editor.
    """

    input: str = setting(None, reads="file", positional=True, required=True, metavar="IN",
                         help="Pairs (the rejected response is edited), responses, or edits.")
    out: str = setting(None, identity=False, positional=True, required=True, metavar="OUT",
                       help="Output JSONL of edit records; a rerun resumes it.")
    editor: str = setting("local:smollm2-135m-instruct", reads="editor", short="-e",
                          help="local:MODEL_SPEC (in-process) or openai:MODEL (an OpenAI-compatible endpoint).")
    base_url: str | None = setting(None, help="Endpoint of openai:MODEL, e.g. http://127.0.0.1:8000/v1 (default: "
                                              "$OPENAI_BASE_URL, else OpenAI). Key: $FINEALIGN_EDITOR_API_KEY or "
                                              "$OPENAI_API_KEY.")
    concurrency: int = setting(4, identity=False, check=positive, help="Requests in flight at once (openai editor).")
    retries: int = setting(4, identity=False, check=non_negative,
                           help="Retries per request on 429, 5xx, timeouts (exponential "
                                "backoff).")
    timeout: float = setting(60.0, identity=False, check=positive, help="Seconds per request (openai editor).")
    backoff: float = setting(1.0, identity=False, check=non_negative,
                             help="First backoff in seconds; doubles per retry, at most 30.")
    max_ratio: float = setting(0.5, check=positive, help="Minimality guard: largest allowed edit ratio (words "
                                                         "replaced, deleted or inserted over the original's; may "
                                                         "exceed 1).")
    on_violation: str = setting("flag", choices=ON_VIOLATION,
                                help="flag (keep, marked in meta) | drop (to OUT.dropped.jsonl).")
    limit: int | None = setting(None, check=positive, help="Edit only the first N input records.")
    template: str = setting("v1", help="Editing prompt version.")
    temperature: float = setting(0.0, check=non_negative, help="0 = greedy.")
    max_new_tokens: int = setting(1024, check=positive, help="Longest edit, in tokens.")
    batch_size: int = setting(4, identity=False, check=positive, help="Sequences decoded together (local editor).")
    overwrite: bool = setting(False, identity=False,
                              help="Start afresh (OUT and its side files) instead of resuming (another "
                                   "editor, template or guard setting is refused without it).")


@dataclass(kw_only=True)
class EvalRMCommandConfig(EvalConfig, EngineArgs):
    """Evaluate a reward (scorer) on a benchmark, next to the length baseline; writes JSON + markdown."""


@dataclass(kw_only=True)
class ReportStage(Settings):
    """``finealign report``'s settings beside its folders: what the page shows."""

    title: str | None = setting(None, help="Page title (default: the recipe's name).")
    samples: int = setting(3, check=non_negative, help="Sample outputs shown per win-rate evaluation.")
    heatmap: int = setting(3, check=non_negative, help="Responses shown in the token-reward heatmap (0: none).")
    max_chars: int = setting(1200, check=positive, help="Cut shown texts to this many characters.")


@dataclass(kw_only=True)
class ReportConfig(ReportStage):
    """Write report.html: stages and settings, reward accuracy vs the length baseline, the judge's own
    accuracy, training curves, a token-reward heatmap, win rates with intervals, samples before/after."""

    run_dirs: list[str] = setting(default_factory=list, positional=True, required=True, metavar="RUN_DIR...",
                                  help="Run folders written by `finealign run`.")
    out: str | None = setting(None, identity=False, short="-o", help="HTML file (default: RUN_DIR/report.html).")


@dataclass(kw_only=True)
class PromptLimit(Settings):
    """A recipe-only setting of ``generate`` and ``eval winrate``: use the first N prompts (a recipe's scale
    knob; on the command line, give a shorter prompts file)."""

    limit: int | None = setting(None, check=positive, help="Use the first N prompts of the file (unset: all).")
