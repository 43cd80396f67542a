"""``finealign sim policy TASK --out DIR``: a small causal LM trained from scratch for one simulated task.

The policy of the fast token-vs-sequence testbed (docs/sim-policy.md). ``train_task_policy(cfg)``:

1. trains a byte-level BPE tokenizer on the task's own text (``policy_model.train_tokenizer``; ChatML
   chat template, ``<|im_end|>`` = EOS);
2. builds a Llama of a few million parameters from scratch (``policy_model.build_model``);
3. fine-tunes it on synthetic answers to freshly drawn task prompts (``sim.answers``: each item wrong with
   probability ``error_rate``), loss on the answer and its EOS;
4. measures its starting gold on ``eval_prompts`` prompts: ``eval_k`` samples each at temperature 1 (top-p
   1), judged by the task's gold scorer: mean, mean of the best of k, share of perfect samples;
5. saves a Hugging Face model directory in ``OUT`` (``config.json``, weights, tokenizer, generation config)
   that every verb loads as ``--model OUT``, plus ``OUT/sim_policy.json``: the task and
   its options, the settings, parameter count, wall time, threads and the starting gold.

Evaluation prompts are held out of the SFT prompts for ``constraints`` and ``arithmetic``. ``facts`` is a
knowledge task: a model trained from scratch can only know the facts its SFT data shows, so its SFT
prompts cover the whole table and its evaluation questions are over facts it saw (with wrong answers at
the error rate).

Seeded (model init, prompt draws and answers are functions of ``seed`` and the step), resumable (a
checkpoint in ``OUT/.work`` every ``save_every`` steps; a killed run resumes from it and computes what an
uninterrupted run computes), and a rerun with other settings into the same folder is refused, naming them.

The trainer itself is ``finealign.train.sim_policy.train_task_policy`` (it checkpoints through
``train.run_state``); this module holds what the other verbs check without torch: the settings, the
record in the folder, and the task checks.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from ..config import RunArgs, non_negative, positive, setting, unit_interval
from ..data.identity import resumable_fields
from ..errors import ConfigError, FinealignError
from . import TASKS, make_task
from .base import SimTask

RECORD = "sim_policy.json"
WORK = ".work"
# sizes: (vocab, hidden, layers, heads, steps, batch, eval prompts)
SIZES = {
    "tiny": dict(vocab_size=300, hidden_size=32, layers=2, heads=2, steps=6, batch_size=4, eval_prompts=3),
    "small": dict(vocab_size=1024, hidden_size=192, layers=4, heads=3, steps=700, batch_size=32, eval_prompts=32),
}
ProgressFn = Callable[[int, int, str], None]


@dataclass(kw_only=True)
class SimPolicyConfig(RunArgs):
    """A small causal LM trained from scratch for one simulated task (tokenizer, SFT on synthetic answers)."""

    task: str = setting(None, positional=True, required=True, choices=tuple(TASKS),
                        help="Task: facts | constraints | arithmetic.")
    task_options: str = setting("", help="The task's difficulty knobs, as for `finealign sim make`.")
    facts_table: str | None = setting(None, reads="file",
                                      help="facts: a relation,subject,answer CSV instead of the bundled table.")
    size: str = setting("small", choices=tuple(SIZES),
                        help="Preset of the sizes below: small (a few million parameters, the default) | tiny (tests).")
    error_rate: float = setting(0.3, check=unit_interval,
                                help="Probability that each item of a synthetic SFT answer is wrong, in [0, 1].")
    vocab_size: int | None = setting(None, check=positive, help="BPE vocabulary size (default: from --size).")
    hidden_size: int | None = setting(None, check=positive, help="Model width (default: from --size).")
    layers: int | None = setting(None, check=positive, help="Decoder layers (default: from --size).")
    heads: int | None = setting(None, check=positive, help="Attention heads (default: from --size).")
    steps: int | None = setting(None, check=positive, help="SFT steps (default: from --size).")
    batch_size: int | None = setting(None, check=positive, help="SFT examples per step (default: from --size).")
    learning_rate: float = setting(3e-3, flag="--lr", check=positive,
                                   help="Peak AdamW learning rate (5% warmup, cosine decay).")
    eval_prompts: int | None = setting(None, check=positive,
                                       help="Prompts of the starting-gold measurement (default: from --size).")
    eval_k: int = setting(4, check=positive, help="Samples per evaluation prompt (temperature 1).")
    max_new_tokens: int = setting(48, check=positive, help="Tokens per evaluation sample at most.")
    save_every: int = setting(50, identity=False, check=non_negative,
                              help="Checkpoint every N steps (0: only at the end).")
    device: str = setting("cpu", identity=False, choices=("auto", "cpu", "cuda"), help="auto | cpu | cuda.")

    def validate(self):
        for k, v in SIZES[self.size].items():
            if getattr(self, k) is None:
                setattr(self, k, v)
        if self.hidden_size % self.heads:
            raise ConfigError("heads", f"hidden_size {self.hidden_size} is not a multiple of heads {self.heads}")
        if self.vocab_size < 300:
            raise ConfigError("vocab_size", f"must be at least 300 (256 bytes, 3 specials, merges), "
                                            f"got {self.vocab_size}")
        if self.facts_table and self.task != "facts":
            raise ConfigError("facts_table", f"only the facts task reads a fact table (task is {self.task})")

    def build_task(self) -> SimTask:
        return make_task(self.task, self.task_options, **({"table": self.facts_table} if self.facts_table else {}))


# ---------------------------------------------------------------------------------------------- records and checks


def policy_record(spec) -> dict | None:
    """``sim_policy.json`` of a model spec that is a folder made by ``finealign sim policy``; None otherwise."""
    if not spec:
        return None
    path = Path(str(spec)).expanduser() / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise FinealignError(f"{path}: unreadable sim policy record ({e})") from None


def check_policy_task(spec, task: str | None, *, flag: str = "--model") -> None:
    """``FinealignError`` when ``spec`` is a ``finealign sim policy`` folder made for another task than ``task``
    (nothing to check when ``task`` is None or ``spec`` is no such folder)."""
    rec = policy_record(spec)
    if rec is None or task is None:
        return
    made = rec.get("task")
    if made != task:
        raise FinealignError(f"{flag} {spec}: a sim policy made for task {made!r}, not for task {task!r}; "
                             f"train one with `finealign sim policy {task} --out DIR`")


def ppo_task(reward: str | None, prompts: str | None) -> str | None:
    """The sim task a PPO run is for: ``sim:TASK`` in the reward spec, else the ``meta.sim.task`` of the first
    prompt record (what ``finealign sim make`` writes); None when neither says."""
    if reward and str(reward).startswith("sim:"):
        return str(reward)[4:].split(",")[0] or None
    return prompts_task(prompts)


def prompts_task(prompts: str | None) -> str | None:
    """The ``meta.sim.task`` of a prompt file's first record (``finealign sim make`` writes it), or None."""
    if prompts and Path(prompts).is_file():
        from ..data.io import iter_objects

        try:
            for _, obj in iter_objects(prompts):
                sim = (obj.get("meta") or {}).get("sim") if isinstance(obj, dict) else None
                return sim.get("task") if isinstance(sim, dict) else None
        except FinealignError:
            return None  # the trainer reports a bad prompt file itself
    return None


def check_ppo_policy(policy, reference, reward, prompts) -> None:
    """The task check of ``train ppo``: a sim policy (or reference) folder made for another task is refused."""
    task = ppo_task(reward, prompts)
    made_for = prompts_task(prompts)
    if task and made_for and made_for != task:
        raise FinealignError(f"--prompts {prompts}: prompts made for sim task {made_for!r}, but the reward is "
                             f"sim:{task}; use --reward sim:{made_for} or prompts of task {task!r}")
    check_policy_task(policy, task, flag="--model")
    check_policy_task(reference, task, flag="--reference")


def _prepare_out(cfg: SimPolicyConfig, out: Path, fp: str) -> dict | None:
    """The finished record when ``out`` already holds this policy; refuses other settings; clears on overwrite."""
    rec = policy_record(out)
    if rec is not None and cfg.overwrite:
        shutil.rmtree(out)
        rec = None
    if rec is None:
        if out.exists() and any(out.iterdir()):
            raise FinealignError(f"{out}: exists and is not a `finealign sim policy` folder; give another --out")
        return None
    if rec.get("fingerprint") != fp:
        old = rec.get("config", {})
        diff = [k for k, v in cfg.to_dict().items() if k not in resumable_fields(SimPolicyConfig) and old.get(k) != v]
        shown = ", ".join(f"{k}: {old.get(k)!r} there, {getattr(cfg, k)!r} now" for k in diff) or "unknown"
        raise FinealignError(f"{out}: holds a sim policy made with other settings ({shown}); use another --out, "
                             "the same settings to resume, or --overwrite")
    return rec if rec.get("status") == "done" else None


def _write_record(out: Path, rec: dict) -> None:
    from ..data.io import write_json

    write_json(out / RECORD, rec)


# ---------------------------------------------------------------------------------------------- prompts
