"""Settings and result types of ``finealign eval winrate`` (the entry point is :mod:`finealign.eval.winrate`)."""


from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import DEVICES, Settings, normalize_dtype
from ..errors import ConfigError

ProgressFn = Callable[[str, int, int], None]
"""``on_progress(stage, done, total)``: stage is ``generate-model``, ``generate-reference``,
``judge-check`` or ``judge``; ``done`` counts finished units out of ``total`` (cached ones included)."""


@dataclass(kw_only=True)
class WinrateConfig(Settings):
    """Settings of one win-rate evaluation (``finealign eval winrate``).

    Exactly one of ``model`` / ``outputs`` and one of ``reference`` / ``reference_outputs`` is given;
    ``prompts`` is required when either side is generated (a prompt-bearing JSONL/JSON file). Output
    files are TRL ``prompt/completion`` JSONL (``prompt_id`` or ``id`` pairs them) or AlpacaEval's JSON
    list of ``instruction/output``. Raises ``ConfigError(field, problem)`` on a bad setting. The fields are
    the flags of ``finealign eval winrate`` (:mod:`finealign.config`).
    """

    out: Path = field(default=None, metadata={"identity": False,
                                              "help": "Output folder: results.json, results.md, pairs.jsonl, "
                                                      "judgments.jsonl (the verdict cache: a rerun resumes).",
                                              "short": "-o", "required": True})
    model: str | None = field(default=None, metadata={"reads": "model",
                                                      "help": "Model spec whose outputs are evaluated (generated "
                                                              "on --prompts).", "short": "-m"})
    outputs: Path | None = field(default=None, metadata={"identity": "derived", "reads": "file",
                                                         "help": "Outputs to evaluate instead of --model: "
                                                                 "prompt/completion JSONL or AlpacaEval JSON."})
    reference: str | None = field(default=None, metadata={"reads": "model",
                                                          "help": "Reference model spec (generated on --prompts)."})
    reference_outputs: Path | None = field(default=None, metadata={"identity": "derived", "reads": "file",
                                                                   "help": "Reference outputs instead of "
                                                                           "--reference."})
    prompts: Path | None = field(default=None, metadata={"reads": "file",
                                                         "help": "Prompts file (needed when a side is generated).",
                                                         "short": "-p"})
    judge: str = field(default="pairwise:smollm2-135m-instruct", metadata={"reads": "judge",
        "help": "Judge spec: pairwise:MODEL (local LM, P('A') vs P('B')), openai:URL,model=NAME (any "
                "OpenAI-compatible endpoint), or any scorer spec (higher score wins).", "short": "-j"})
    judge_check: str = field(default="alpaca-eval", metadata={"identity": "derived", "reads": "file",
        "help": "Labelled pairwise benchmark the judge is validated on (alpaca-eval | hh-harmless | a pair "
                "FILE), or 'none' to skip."})
    judge_check_limit: int = field(default=100, metadata={"identity": "derived",
                                                          "help": "Pairs of the judge check (the first N)."})
    preference: str = field(default="hard", metadata={
        "help": "hard: each order's verdict is a win / loss / tie (two orders that disagree make a tie); "
                "soft: the judge's probabilities are averaged (AlpacaEval's weighted mode)."})
    max_chars: int | None = field(default=None, metadata={"help": "Cut responses to this many characters "
                                                                  "before judging (CPU budgets)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Generation: new tokens per output."})
    temperature: float = field(default=0.0, metadata={"help": "Generation temperature (0 = greedy)."})
    top_p: float = field(default=0.9, metadata={"help": "Generation nucleus mass."})
    batch_size: int = field(default=8, metadata={"identity": False, "help": "Rows per generation / judge call."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16 (local models)."})
    device: str = field(default="auto", metadata={"identity": False, "help": "cpu | cuda | auto."})
    seed: int = field(default=0, metadata={"help": "Generation and bootstrap seed."})
    n_boot: int = field(default=1000, metadata={"identity": "derived",
                                                "help": "Bootstrap resamples for the 95% intervals."})
    data_dir: Path | None = field(default=None, metadata={"identity": "derived",
                                                          "help": "Shared data folder (judge-check benchmarks)."})
    overwrite: bool = field(default=False, metadata={"identity": False,
                                                     "help": "Start over: delete this command's earlier files in "
                                                             "--out (needed to change settings there)."})

    def validate(self):  # (Settings: after each field's type is coerced, e.g. str -> Path)
        if self.out is None:
            raise ConfigError("out", "required (give --out or set it in the --config YAML)")
        self.dtype = normalize_dtype(self.dtype)
        if self.device not in DEVICES:
            raise ConfigError("device", f"{self.device!r} is not one of {', '.join(DEVICES)}")
        if (self.model is None) == (self.outputs is None):
            raise ConfigError("model", "give exactly one of --model and --outputs")
        if (self.reference is None) == (self.reference_outputs is None):
            raise ConfigError("reference", "give exactly one of --reference and --reference-outputs")
        if (self.model is not None or self.reference is not None) and self.prompts is None:
            raise ConfigError("prompts", "--prompts is needed to generate outputs with --model / --reference")
        if self.preference not in ("hard", "soft"):
            raise ConfigError("preference", f"expected hard or soft, got {self.preference!r}")
        for name in ("judge_check_limit", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if self.max_chars is not None and self.max_chars < 1:
            raise ConfigError("max_chars", f"must be at least 1, got {self.max_chars}")
        if self.n_boot < 10:
            raise ConfigError("n_boot", f"must be at least 10, got {self.n_boot}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("temperature" if self.temperature < 0 else "top_p", "out of range")
        if not self.judge or not self.judge.strip():
            raise ConfigError("judge", "empty judge spec")


@dataclass(frozen=True)
class JudgeCheck:
    """The judge's own pairwise accuracy on a labelled benchmark, beside the length baseline.

    ``evidence`` is True only when the judge's 95% interval lies above 0.5. An interval that includes 0.5
    (chance) or lies below it (a judge that prefers the worse answer) makes win rates that are not evidence.
    """

    benchmark: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    length_accuracy: float
    length_ci_low: float
    length_ci_high: float
    position_disagreement: float | None
    #: ordered comparisons per verdict path (``logprob`` / ``parsed`` / ``tie`` / ``score``)
    paths: dict | None = None

    @property
    def evidence(self) -> bool:
        return math.isfinite(self.ci_low) and self.ci_low > 0.5


@dataclass(frozen=True)
class WinrateResult:
    """What ``run_winrate`` measured (rates are fractions in [0, 1]); ``paths`` name the written files."""

    win_rate: float
    win_rate_se: float
    win_rate_ci: tuple[float, float]
    lc_win_rate: float
    lc_win_rate_se: float
    n: int
    wins: int
    losses: int
    ties: int
    position_disagreement: float | None
    judge: str
    judge_check: JudgeCheck | None
    warning: str | None
    paths: dict[str, str]
    #: ordered comparisons of the win rate per verdict path (``logprob`` / ``parsed`` / ``tie`` / ``score``)
    judge_paths: dict[str, int] = field(default_factory=dict)
    #: ``ok`` | ``unstable`` | ``not estimable`` (then ``lc_win_rate`` is NaN); ``lc_warning`` says why
    lc_status: str = "ok"
    lc_warning: str | None = None


