"""``finealign label``: score k responses per prompt and write DPO pairs or KTO labels (TRL formats).

Flags are generated from :class:`LabelCommandConfig`: the library's
:class:`~finealign.train.labeling.LabelConfig`, the engine options and the files.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import part, setting
from ..engine.shards import EngineArgs
from ..train.labeling import LabelConfig
from .engine_opts import engine_progress, shard_events


@dataclass(kw_only=True)
class LabelCommandConfig(LabelConfig, EngineArgs):
    """Label sampled responses with a scorer: DPO pairs (best vs worst) or KTO labels."""

    input: str = setting(None, positional=True, required=True, metavar="IN",
                         help="Responses from `finealign generate` (prompt_id, sample, prompt, completion).")
    out: str = setting(None, positional=True, required=True, metavar="OUT",
                       help="Output JSONL: prompt/chosen/rejected (dpo) or prompt/completion/label (kto).")
    scorer: str = setting(None, short="-s", required=True, help="Scorer spec, e.g. flr:smollm2-135m-instruct.")
    overwrite: bool = setting(False, help="Empty the score cache OUT.scores.jsonl first (a scorer whose model "
                                          "changed is refused without it).")


def run_label(cfg: LabelCommandConfig, quiet: bool = False) -> None:
    from ..train.labeling import label_file
    from .common import out as stdout, progress

    lcfg, eng = part(cfg, LabelConfig), part(cfg, EngineArgs)
    with progress(disable=quiet) as p:
        task = p.add_task("scoring", total=None, info="")
        if eng.engine == "ray":
            from ..engine.sharded import label_file_sharded

            st = label_file_sharded(cfg.scorer, cfg.input, cfg.out, lcfg, engine=eng, on_event=shard_events(),
                                    on_progress=engine_progress(p, task), overwrite=cfg.overwrite)
        else:
            st = label_file(cfg.scorer, cfg.input, cfg.out, lcfg, on_total=lambda n: p.update(task, total=n),
                            on_progress=lambda n: p.advance(task, n), overwrite=cfg.overwrite)
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(st.dropped.items())) or "none"
    unit = "pairs" if cfg.format == "dpo" else "labeled responses"
    stdout.print(f"prompts: {st.prompts}  responses: {st.responses} ({st.empty} empty, scored as they are)  "
                 f"{unit} written: {st.written}  "
                 f"dropped ({'prompts' if cfg.format == 'dpo' else 'responses'}): {dropped}  -> {cfg.out}",
                 soft_wrap=True, highlight=False, markup=False)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "label", LabelCommandConfig, run_label, resumable=True)
