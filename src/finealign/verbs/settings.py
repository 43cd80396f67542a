"""The settings dataclasses of the verbs whose library function has no config of its own (label, eval rm,
report), the settings only a recipe stage takes (``limit``), and those of generate, score and edit, which
live beside their library functions (their output's manifest is derived from them,
``data.identity.resume_identity``) and are named here too.

The command line and the recipe stage of a verb take the same dataclass (the verb table,
:mod:`finealign.verbs`), so a setting has one name, one type and one check in both. The trainers and
``eval winrate`` take their library configs (``PPOConfig``, ``WinrateConfig``, ...) directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import EngineArgs, Settings, non_negative, positive, setting
from ..edits.config import EditConfig
from ..eval.rm_eval import EvalConfig
from ..generate_job import BACKENDS, GenerateConfig
from ..rewards.score_file import ScoreConfig
from ..train.labeling import LabelConfig

__all__ = ["BACKENDS", "EditConfig", "EvalRMCommandConfig", "GenerateConfig", "LabelCommandConfig", "PromptLimit",
           "ReportConfig", "ReportStage", "ScoreConfig"]


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
