"""The verb table: one row per verb that is both a command (``finealign generate``) and a recipe stage
(``type: generate``), from which the stage type, the local/engine dispatch and the parity of the two
are derived.

A row (:class:`Verb`) names the verb's settings dataclass (the command's flags are generated from it by
``cli.options.command_from_config``; a recipe stage takes the same fields as keys), the settings only a
recipe takes (``stage_extras``: ``limit``), the fields the recipe runner sets (``owned``, with why), its
run functions (``local``, and ``sharded`` where the verb runs on an engine; one signature
``run(cfg, hooks)`` and one progress-callback shape, :mod:`finealign.verbs.run`), its outputs inside a
stage folder, and how a stage summarizes its result. ``pipeline.stages`` builds every recipe stage type
from these rows; ``cli/`` runs the same row with :func:`run_verb` and prints the result;
``tests/test_verb_parity.py`` checks that every command flag is a recipe key with the same check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Verb:
    """One verb. ``name``: the stage type (``train-dpo``); ``command``: its words on the command line
    (``("train", "dpo")``); ``settings``: its settings dataclass (the command's and the stage's);
    ``local`` / ``sharded``: ``run(cfg, hooks)`` / ``run(cfg, hooks, engine, on_event)`` (None: the verb
    does not shard); ``summary(result, cfg, hooks)``: a stage's summary dict; ``outputs``: {name: path inside
    the stage folder, "" = the folder}, ``out`` first; ``owned``: {field: why} set by the recipe runner (a
    recipe may not set them; ``stage_values(outputs)`` gives their values); ``fixed``: fields the command
    and stage type set (``method``); ``stage_extras``: settings only a recipe stage takes, with ``cuts``:
    the field that ``limit`` cuts to its first N prompts; ``needs_all``: the stage depends on every earlier
    one (the report); ``help``: the command's help (default: the settings' docstring, first paragraph);
    ``resumable``: a rerun of the command resumes (Ctrl-C then says so)."""

    name: str
    command: tuple[str, ...]
    settings: type
    local: Callable[..., Any]
    summary: Callable[[Any, Any, Any], dict]
    sharded: Callable[..., Any] | None = None
    outputs: dict = field(default_factory=lambda: {"out": ""})
    owned: dict = field(default_factory=dict)
    stage_values: Callable[[dict], dict] | None = None
    fixed: dict = field(default_factory=dict)
    stage_extras: type | None = None
    cuts: str | None = None
    needs_all: bool = False
    help: str | None = None
    resumable: bool = True

    @property
    def shards(self) -> bool:
        """Whether the verb runs sharded on an engine (``--engine ray``)."""
        return self.sharded is not None

    def owned_values(self, outputs: dict) -> dict:
        """The values of the runner-owned fields for a stage whose outputs are ``outputs``."""
        return self.stage_values(outputs) if self.stage_values else {"out": outputs["out"]}


RUNNER_OUT = {"out": "the stage's folder, RUN_DIR/NAME",
              "overwrite": "the runner clears a stage whose settings changed"}
RUNNER_FILE = {"out": "the stage's output file inside RUN_DIR/NAME",
               "overwrite": "the runner clears a stage whose settings changed"}


def _table() -> list[Verb]:
    from ..eval.winrate import WinrateConfig
    from ..studies.sim_study_config import SimStudyConfig
    from ..train.followup_sft import FollowupSFTConfig
    from ..train.ppo_config import PPOConfig
    from ..train.preference import PrefTrainConfig
    from ..train.token_rm_config import TokenRMConfig
    from . import run as R
    from . import settings as S

    trainer = dict(summary=R.train_summary, owned={**RUNNER_OUT, "quiet": "give --quiet to the runner"})
    resume = " Rerun the same command to resume."
    pref = ("{m} with TRL's {m}Trainer on labeled data (YAML recipe + flags; LoRA option)." + resume).format
    method = {"method": "given by the stage type"}
    report_values = lambda o: {"out": o["out"], "run_dirs": [str(o["dir"].parent)]}  # noqa: E731
    return [
        Verb("generate", ("generate",), S.GenerateConfig, R.generate_local, R.generate_summary,
             sharded=R.generate_sharded, outputs={"out": "responses.jsonl"}, owned=RUNNER_FILE,
             stage_extras=S.PromptLimit, cuts="prompts"),
        Verb("score", ("score",), S.ScoreConfig, R.score_local, R.plain_summary, sharded=R.score_sharded,
             outputs={"out": "scored.jsonl"}, owned=RUNNER_FILE),
        Verb("label", ("label",), S.LabelCommandConfig, R.label_local, R.label_summary, sharded=R.label_sharded,
             outputs={"out": "labels.jsonl"}, owned=RUNNER_FILE),
        Verb("edit", ("edit",), S.EditConfig, R.edit_local, R.edit_summary, outputs={"out": "edits.jsonl"},
             owned=RUNNER_FILE, help=" ".join(S.EditConfig.__doc__.split("``dtype``")[0].split())),
        Verb("train-dpo", ("train", "dpo"), PrefTrainConfig, R.pref_local, **{**trainer, "owned": {
            **trainer["owned"], **method}}, fixed={"method": "dpo"}, help=pref(m="DPO")),
        Verb("train-kto", ("train", "kto"), PrefTrainConfig, R.pref_local, **{**trainer, "owned": {
            **trainer["owned"], **method}}, fixed={"method": "kto"}, help=pref(m="KTO")),
        Verb("train-followup-sft", ("train", "followup-sft"), FollowupSFTConfig, R.followup_local, **trainer,
             help="SFT a follow-up model on (prompt, response, feedback) in the role-swapped template; score with "
                  "flr:OUT,mode=finetuned." + resume),
        Verb("train-token-rm", ("train", "token-rm"), TokenRMConfig, R.token_rm_local, **trainer,
             help="Train a token-level reward model on minimal-edit pairs." + resume),
        Verb("train-ppo", ("train", "ppo"), PPOConfig, R.ppo_local, **trainer, outputs={"out": "", "policy": "policy"},
             help="PPO with per-token rewards (--granularity token) or the sequence-level baseline (sequence)."
                  + resume),
        Verb("eval-rm", ("eval", "rm"), S.EvalRMCommandConfig, R.eval_rm_local, R.eval_rm_summary,
             sharded=R.eval_rm_sharded, **{k: v for k, v in trainer.items() if k != "summary"}),
        Verb("eval-winrate", ("eval", "winrate"), WinrateConfig, R.winrate_local, R.winrate_summary,
             owned=trainer["owned"], stage_extras=S.PromptLimit, cuts="prompts",
             help="Win rate (ties 1/2, SE, bootstrap CI) and AlpacaEval-2 length-controlled win rate vs a reference, "
                  "judged in both orders by a judge whose own accuracy is measured and printed beside it."),
        Verb("sim-study", ("sim", "study"), SimStudyConfig, R.sim_study_local, R.sim_study_summary,
             owned={"out": "the stage's folder, RUN_DIR/NAME"}),
        Verb("report", ("report",), S.ReportConfig, R.report_local, R.report_summary,
             outputs={"out": "report.html"}, needs_all=True, stage_values=report_values, resumable=False,
             help=" ".join(S.ReportConfig.__doc__.split()),
             owned={"out": "RUN_DIR/NAME/report.html", "run_dirs": "the run folder itself"}),
    ]


_VERBS: dict[str, Verb] = {}


def verbs() -> dict[str, Verb]:
    """{stage type name: row} of every verb (built on first use: it imports the verbs' config modules)."""
    if not _VERBS:
        _VERBS.update({v.name: v for v in _table()})
    return _VERBS


def run_verb(name: str, cfg, hooks=None):
    """Run the verb ``name`` (``generate``, ``train-ppo``, ...) on its settings ``cfg`` with ``hooks``
    (default: silent); its result. Raises what the verb raises (``FinealignError`` for bad input)."""
    from .run import Hooks, dispatch

    return dispatch(verbs()[name], cfg, hooks or Hooks())
