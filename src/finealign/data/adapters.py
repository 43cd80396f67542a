"""Adapters for the public data sets in the shared data folder (see ``finealign.data.shared.data_root``).

``load_dataset(name, src=None)`` turns one set into finealign records (TRL's standard formats):

- ``hh-harmless`` (pair): HH-RLHF harmless-base test; prompt = the shared turns as chat messages
- ``alpaca-eval`` (pair): AlpacaEval 2 GPT-4-turbo judgments with the soft label ``p_chosen``
- ``alpaca-eval-outputs`` (response): outputs of 19 systems on the 805 AlpacaEval instructions
- ``qa-feedback-edits`` (edit): QA-Feedback ``prediction 1`` -> human correction
- ``qa-feedback-pairs`` (pair): QA-Feedback's 6 pairwise preferences per question
- ``defacto-train`` / ``defacto-val`` (edit): DeFacto summary -> human correction (summaries with errors)
- ``expertqa-edits`` (edit): ExpertQA answer -> expert-revised answer
- ``prometheus-mt-bench`` / ``prometheus-vicuna`` (rating): responses with the mean of 3 GPT-4 scores
- ``mt-bench`` (prompt): the 80 first-turn questions; ``mt-bench-multiturn`` (prompt): second turns

Every problem in a source file raises ``DataError`` naming ``path:line: field: problem`` (``line`` is
the JSONL line, or the 1-based index in a JSON array). Items that are valid but cannot become a record
(e.g. an empty reply, a pair without a preference) are left out and counted: ``convert_dataset``
returns the counts, ``load_dataset`` only the records.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from ..errors import FinealignError
from .adapters_common import Loaded
from .adapters_edit import load_defacto, load_expertqa, load_qa_edits
from .adapters_eval import (
    load_alpaca_outputs,
    load_mt_bench,
    load_mt_bench_multiturn,
    load_prometheus,
    read_leaderboard,
)
from .adapters_pref import load_alpaca_eval, load_hh, load_qa_pairs
from .records import Record

__all__ = ["DATASETS", "DatasetInfo", "Loaded", "alpaca_eval_leaderboard", "convert_dataset", "dataset_path",
           "load_dataset"]

_AE = "alpaca_eval_v2_gpt4turbo_annotations"
_AE_LICENSE = "CC BY-NC 4.0 (non-commercial)"
_PROM_LICENSE = "Apache-2.0 (GPT-4 feedback: OpenAI terms)"
LEADERBOARD_PATH = f"{_AE}/leaderboard_weighted_alpaca_eval_gpt4_turbo.csv"


@dataclass(frozen=True)
class DatasetInfo:
    """A public data set finealign can convert. ``default_path`` is relative to ``data_root()``."""

    name: str
    kind: str
    default_path: str
    description: str
    license: str


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in [
    DatasetInfo("hh-harmless", "pair", "hh_rlhf_harmless_base_test/test.jsonl",
                "Anthropic HH-RLHF harmless-base test pairs; prompt = shared turns as chat messages", "MIT"),
    DatasetInfo("alpaca-eval", "pair", f"{_AE}/annotations",
                "AlpacaEval 2 GPT-4-turbo judgments vs gpt4_1106_preview; p_chosen = soft label", _AE_LICENSE),
    DatasetInfo("alpaca-eval-outputs", "response", f"{_AE}/model_outputs",
                "AlpacaEval outputs of 19 systems on the 805 instructions; meta.system", _AE_LICENSE),
    DatasetInfo("qa-feedback-edits", "edit", "finegrained_rlhf_qa_feedback/dev_feedback.json",
                "QA-Feedback (ASQA) dev: prediction 1 -> human-corrected prediction", "Apache-2.0"),
    DatasetInfo("qa-feedback-pairs", "pair", "finegrained_rlhf_qa_feedback/dev_feedback.json",
                "QA-Feedback dev: the 6 pairwise preferences among 4 predictions (ties left out)", "Apache-2.0"),
    DatasetInfo("defacto-train", "edit", "defacto_summary_corrections/train.jsonl",
                "DeFacto train: XSum summary with errors -> human minimal correction", "MIT"),
    DatasetInfo("defacto-val", "edit", "defacto_summary_corrections/val.jsonl",
                "DeFacto val: XSum summary with errors -> human minimal correction", "MIT"),
    DatasetInfo("expertqa-edits", "edit", "expertqa_revised_answers/expertqa_lfqa_val_test_union.jsonl",
                "ExpertQA: LLM answer -> expert-revised answer (changed ones)", "MIT"),
    DatasetInfo("prometheus-mt-bench", "rating", "prometheus_ratings/mt_bench_eval.json",
                "MT-Bench turn-2 responses of 4 models, mean of 3 GPT-4 rubric scores (1-5)", _PROM_LICENSE),
    DatasetInfo("prometheus-vicuna", "rating", "prometheus_ratings/vicuna_eval.json",
                "Vicuna-Bench responses of 4 models, mean of 3 GPT-4 rubric scores (1-5)", _PROM_LICENSE),
    DatasetInfo("mt-bench", "prompt", "mt_bench_questions/question.jsonl",
                "MT-Bench: the 80 first-turn questions (id = question_id)", "Apache-2.0"),
    DatasetInfo("mt-bench-multiturn", "prompt", "mt_bench_questions",
                "MT-Bench second turns after a GPT-4 (or ChatGPT) first answer", "Apache-2.0"),
]}

_LOADERS: dict[str, Callable[[Path], Loaded]] = {
    "hh-harmless": load_hh,
    "alpaca-eval": load_alpaca_eval,
    "alpaca-eval-outputs": load_alpaca_outputs,
    "qa-feedback-edits": load_qa_edits,
    "qa-feedback-pairs": load_qa_pairs,
    "defacto-train": partial(load_defacto, split="train"),
    "defacto-val": partial(load_defacto, split="val"),
    "expertqa-edits": load_expertqa,
    "prometheus-mt-bench": partial(load_prometheus, file="mt_bench_eval.json"),
    "prometheus-vicuna": partial(load_prometheus, file="vicuna_eval.json"),
    "mt-bench": load_mt_bench,
    "mt-bench-multiturn": load_mt_bench_multiturn,
}


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise FinealignError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def dataset_path(name: str, src: str | Path | None = None) -> Path:
    """Where ``name`` is read from: ``src``, or ``data_root()/default_path``.

    A ``src`` folder that holds ``default_path`` (a data root like the shared folder), or the default
    file or folder by name (the data set's own folder for a file, the AlpacaEval folder for its
    ``annotations/``), is resolved to it.
    """
    info = _info(name)
    if src is None:
        from .shared import data_root

        return data_root() / info.default_path
    p = Path(src).expanduser()
    if p.is_dir() and (p / info.default_path).exists():  # a data root like the shared folder
        return p / info.default_path
    leaf = Path(info.default_path).name
    if p.is_dir() and p.name != leaf and (p / leaf).exists():
        return p / leaf
    return p


def convert_dataset(name: str, src: str | Path | None = None) -> Loaded:
    """Records of ``name`` plus the counts of source items left out, by reason."""
    info = _info(name)
    path = dataset_path(name, src)
    if not path.exists():
        from ..errors import DataError

        raise DataError(path, None, None, f"not found (data set {info.name} expects {info.default_path})")
    return _LOADERS[name](path)


def load_dataset(name: str, src: str | Path | None = None) -> list[Record]:
    """The records of the public data set ``name`` (see ``DATASETS``), read from ``src`` or the shared folder."""
    return convert_dataset(name, src).records


def alpaca_eval_leaderboard(src: str | Path | None = None, column: str = "win_rate") -> dict[str, float]:
    """AlpacaEval 2 leaderboard (weighted GPT-4-turbo annotator): system name -> win rate in percent
    (``column="length_controlled_winrate"``: the length-controlled win rate)."""
    if src is None:
        from .shared import data_root

        path = data_root() / LEADERBOARD_PATH
    else:
        path = Path(src).expanduser()
        if path.is_dir() and (path / Path(LEADERBOARD_PATH).name).is_file():
            path = path / Path(LEADERBOARD_PATH).name
        elif path.is_dir() and (path / LEADERBOARD_PATH).is_file():
            path = path / LEADERBOARD_PATH
    return read_leaderboard(path, column)
