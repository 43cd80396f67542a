"""``finealign score --scorer SPEC IN OUT``: add reward scores to every record of a file.

Response records (``prompt``/``completion``) get ``score``; pair records get ``score_chosen`` and
``score_rejected``; rating records (whose ``score`` is the human rating) get ``reward``. An FLR
scorer also adds its per-dimension scores (``flr_dims``, ``flr_dims_chosen``, ...). All other
fields are kept. The whole input is validated before anything is written; OUT is appended record
by record, so an interrupted run resumes where it stopped. Flags are generated from :class:`ScoreConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import part, positive, setting
from ..errors import ConfigError
from ..engine.shards import EngineArgs
from .engine_opts import shard_events

# The library function lives in rewards/score_file.py (the pipeline runs it too); names kept here.
from ..rewards.score_file import score_file


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


def run_score(cfg: ScoreConfig, quiet: bool = False) -> None:
    from .common import console, out as stdout, progress_callback

    scorer, inp, out = cfg.scorer_spec(), Path(cfg.input), Path(cfg.out)
    console.print(f"loading scorer {scorer} ...")
    with progress_callback("scoring", disable=quiet) as on_progress:
        if cfg.engine == "ray":
            from ..engine.sharded import score_file_sharded

            st = score_file_sharded(scorer, inp, out, chunk=cfg.chunk, engine=part(cfg, EngineArgs),
                                    on_progress=on_progress, on_event=shard_events(), overwrite=cfg.overwrite,
                                    max_chars=cfg.max_chars)
        else:
            st = score_file(scorer, inp, out, chunk=cfg.chunk, on_progress=on_progress, overwrite=cfg.overwrite,
                            max_chars=cfg.max_chars)
    stdout.print(f"{st['kind']} records: {st['records']}  scored now: {st['written']}  "
                 f"already done: {st['skipped']}  empty responses: {st.get('empty', 0)}  "
                 f"truncated contexts: {st['truncated']}  -> {out}",
                 soft_wrap=True, highlight=False)


def register(app, **_):
    from .options import command_from_config

    command_from_config(app, "score", ScoreConfig, run_score, resumable=True)
