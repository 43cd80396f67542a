"""The stage types a recipe may use, built from the verb table (:mod:`finealign.verbs`): one per verb.

| type | verb | settings (dataclass) | main output (``${stages.NAME.out}``) |
|---|---|---|---|
| ``generate`` | ``finealign generate`` | ``verbs.settings.GenerateConfig`` + ``limit`` | ``responses.jsonl`` |
| ``score`` | ``finealign score`` | ``verbs.settings.ScoreConfig`` | ``scored.jsonl`` |
| ``label`` | ``finealign label`` | ``verbs.settings.LabelCommandConfig`` | ``labels.jsonl`` |
| ``edit`` | ``finealign edit`` | ``verbs.settings.EditConfig`` | ``edits.jsonl`` |
| ``train-dpo`` / ``train-kto`` | ``finealign train dpo|kto`` | ``train.preference.PrefTrainConfig`` | the folder (model) |
| ``train-followup-sft`` | ``finealign train followup-sft`` | ``train.followup_sft.FollowupSFTConfig`` | the folder |
| ``train-token-rm`` | ``finealign train token-rm`` | ``train.token_rm.TokenRMConfig`` | the folder (model) |
| ``train-ppo`` | ``finealign train ppo`` | ``train.ppo_config.PPOConfig`` | the folder; ``policy``: ``policy/`` |
| ``eval-rm`` | ``finealign eval rm`` | ``verbs.settings.EvalRMCommandConfig`` | the folder |
| ``eval-winrate`` | ``finealign eval winrate`` | ``eval.winrate.WinrateConfig`` + ``limit`` | the folder |
| ``report`` | ``finealign report`` | ``verbs.settings.ReportConfig`` | ``report.html`` |

A stage takes every setting of its verb's command but the ones the runner owns (``out``, ``overwrite``;
DPO/KTO's ``method``; the report's folders): outputs go to ``RUN_DIR/NAME/``. ``generate`` and
``eval-winrate`` also take ``limit`` (the first N prompts). ``generate``, ``score``, ``label`` and
``eval-rm`` take the verbs' ``engine`` / ``ray_address`` / ``workers`` / ``shard_size`` (``engine: ray``
runs them sharded on Ray workers, byte-identical output; these settings are marked ``identity=False``, so
switching engine resumes the same stage). Type names may be written with a space (``train dpo``,
``eval winrate``) as on the command line.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable



@dataclass
class StageContext:
    """What a stage's run function gets besides its settings: its folder and outputs, the run folder,
    ``log(message)``, ``progress(label)`` -> an ``on_progress(done, total, info)`` callback, ``quiet``,
    ``share`` (False: no score cache shared with the run's other stages; each stage scores afresh)."""

    dir: Path
    outputs: dict
    run_dir: Path
    log: Callable[[str], None]
    progress: Callable[[str], Callable[[int, int, str], None]]
    quiet: bool = False
    share: bool = True


@dataclass(frozen=True)
class StageType:
    """One kind of stage.

    ``config``: the verb's own settings dataclass (None: settings are ``extras`` only); ``extras``: a
    dataclass of settings the verb takes beside ``config``; ``owned``: config fields the runner sets
    ({field: why}); ``outputs``: {name: path inside the stage folder, "" = the folder}, ``out`` first;
    ``needs_all``: depends on every earlier stage (the report); ``values(outputs)``: the owned fields' values
    (default: ``out``). Built from the verb table by :func:`stage_type`. Which settings make the output and which
    name inputs (fingerprinted by content) is marked on the settings' fields (``data.identity``).
    """

    name: str
    run: Callable[[Any, Any, StageContext], dict]
    config: type | None = None
    extras: type | None = None
    owned: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=lambda: {"out": ""})
    needs_all: bool = False
    values: Callable[[dict], dict] | None = None

    def _fields(self, cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init] if cls is not None else []

    def setting_names(self) -> list[str]:
        """Every key a recipe may set for this type."""
        return [n for n in self._fields(self.config) if n not in self.owned and n not in self.fixed] + \
            [n for n in self._fields(self.extras) if n not in self._fields(self.config)]

    def output_names(self) -> list[str]:
        return list(self.outputs) + ["dir"]

    def build(self, settings: dict, outputs: dict) -> tuple[Any, Any]:
        """``(config, extras)`` from resolved settings; the config's owned fields point at ``outputs``.
        Raises the config's own ``ConfigError`` / ``FinealignError``."""
        cfields = set(self._fields(self.config))
        extras = None
        if self.extras is not None:
            ex = {k: v for k, v in settings.items() if k in set(self._fields(self.extras)) - cfields}
            extras = self.extras(**ex)
        if self.config is None:
            return None, extras
        values = {k: v for k, v in settings.items() if k in cfields}
        hints = _hints(self.config)
        owned = self.values(outputs) if self.values else {"out": outputs["out"]}
        for k, v in owned.items():  # the runner's values of its fields; the other owned fields keep their defaults
            if k in self.owned and k in cfields:
                values[k] = (Path(v) if "Path" in str(hints.get(k, "")) else str(v)) if isinstance(v, Path) else v
        values.update(self.fixed)
        return self.config(**values), extras


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolvable annotations: treat as strings
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _limited_prompts(path: str | Path, limit: int | None, folder: Path) -> Path:
    """``path`` itself, or its first ``limit`` prompts written to ``folder/prompts.jsonl``."""
    if not limit:
        return Path(path)
    from ..data.io import write_jsonl
    from ..data.prompts import read_prompts

    items = read_prompts(path)[:limit]
    return write_jsonl(folder / "prompts.jsonl", [{"id": p.id, "prompt": p.prompt} for p in items])


def stage_run(verb) -> Callable[[Any, Any, StageContext], dict]:
    """The run function of ``verb``'s stage type: ``limit`` applied, the verb run through the one local/engine
    dispatch (``verbs.run.dispatch``) with the stage's progress and log, its result summarized by the row.
    The stages of one run share the score caches under ``RUN_DIR/.score-cache/`` (unless ``ctx.share`` is off)."""
    from ..verbs.run import Hooks, dispatch

    def run(cfg, extras, ctx: StageContext) -> dict:
        limit = getattr(extras, "limit", None)
        if verb.cuts and limit and getattr(cfg, verb.cuts) is not None:
            cfg = dataclasses.replace(cfg, **{verb.cuts: _limited_prompts(getattr(cfg, verb.cuts), limit, ctx.dir)})
        hooks = Hooks(progress=ctx.progress, log=ctx.log, shared=ctx.run_dir if ctx.share else None)
        return verb.summary(dispatch(verb, cfg, hooks), cfg, hooks)

    run.__name__ = "run_" + verb.name.replace("-", "_")
    run.__doc__ = verb.local.__doc__
    return run


def stage_type(verb) -> StageType:
    """The recipe stage type derived from a row of the verb table."""
    return StageType(verb.name, stage_run(verb), config=verb.settings, extras=verb.stage_extras, owned=dict(verb.owned),
                     fixed=dict(verb.fixed), outputs=dict(verb.outputs), needs_all=verb.needs_all,
                     values=verb.owned_values)


def _registry() -> dict[str, StageType]:
    from ..verbs import verbs

    return {name: stage_type(v) for name, v in verbs().items()}


class _LazyTypes(dict):
    """The registry, built on first use (it imports the verbs' config modules)."""

    def _fill(self):
        if not super().__len__():
            self.update(_registry())

    def __getitem__(self, k):
        self._fill()
        return super().__getitem__(k)

    def __contains__(self, k):
        self._fill()
        return super().__contains__(k)

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self):
        self._fill()
        return super().__len__()

    def keys(self):
        self._fill()
        return super().keys()

    def items(self):
        self._fill()
        return super().items()


STAGE_TYPES: dict[str, StageType] = _LazyTypes()


def normalize_type(name: str) -> str:
    """``train dpo`` / ``train_dpo`` / ``eval winrate`` -> ``train-dpo`` / ``eval-winrate``."""
    return "-".join(name.strip().lower().replace("_", " ").split())
