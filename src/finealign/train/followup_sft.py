"""Follow-up model fine-tuning: TRL's SFTTrainer on (prompt, response, natural-language feedback).

Each example is rendered with ``roleswap_messages(prompt, response)`` (the FLR scorer's
``finetuned`` mode uses the same function) and the feedback is the next assistant turn; the loss
is on the feedback's tokens only (TRL prompt-completion format, ``completion_only_loss``).
Score with the result: ``flr:OUT,mode=finetuned``.

Data: JSONL/JSON/CSV/Parquet records ``prompt`` (string or chat messages), ``response``,
``feedback`` (+ optional ``id``), or a built-in source: ``prometheus-vicuna`` /
``prometheus-mt-bench`` (the 3 GPT-4 rationales of every Prometheus item, read from the raw
JSON of the shared data folder; ``feedback_per_item`` keeps the first N of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.records import FieldError, Prompt, check_prompt, check_text
from ..errors import DataError, FinealignError
from ..rewards.roleswap import roleswap_messages
from .trl_common import TrainResult, check_common, common_args, lora_config, train_and_save

PROMETHEUS = {"prometheus-vicuna": "vicuna_eval.json", "prometheus-mt-bench": "mt_bench_eval.json"}


@dataclass(frozen=True)
class FollowupSFTConfig:
    """Follow-up SFT.

    model: model to fine-tune (finealign model spec). data: a feedback file or a built-in source
    (``prometheus-vicuna``, ``prometheus-mt-bench``). out: output folder. feedback_per_item: keep the
    first N feedback texts per (prompt, response) of a built-in source (0 = all). limit: use the first
    N examples (0 = all). learning_rate, epochs, max_steps (-1: by epochs), batch_size, grad_accum,
    max_length (tokens; longer examples lose their oldest context in TRL's truncation), logging_steps,
    save_steps, seed, dtype, lora / lora_r / lora_alpha. trl: extra TRL SFTConfig arguments.
    """

    model: str = "smollm2-135m-instruct"
    data: Path | None = None
    out: Path | None = None
    feedback_per_item: int = 1
    limit: int = 0
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 1024
    logging_steps: int = 10
    save_steps: int = 200
    seed: int = 0
    dtype: str = "float32"
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    trl: dict | None = None

    def __post_init__(self):
        check_common(self)
        if self.feedback_per_item < 0 or self.limit < 0:
            raise FinealignError("feedback_per_item and limit must be >= 0")


def prometheus_feedback(path: str | Path, feedback_per_item: int = 1) -> list[dict]:
    """``{prompt, response, feedback, id, score}`` from a raw Prometheus file (``gpt4_feedback`` list)."""
    import json

    from ..data.adapters_eval import dialogue_messages, prometheus_parts

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(path, None, None, f"cannot read: {e}") from None
    if not isinstance(data, list):
        raise DataError(path, None, None, "expected a JSON array")
    out = []
    for n, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(path, n, None, "expected an object")
        parts = prometheus_parts(str(row.get("instruction", "")))
        if parts is None:
            raise DataError(path, n, "instruction", "not a Prometheus absolute-grading prompt")
        fbs = row.get("gpt4_feedback")
        if not isinstance(fbs, list) or not fbs:
            raise DataError(path, n, "gpt4_feedback", "expected a non-empty list of strings")
        keep = fbs if feedback_per_item == 0 else fbs[:feedback_per_item]
        for j, fb in enumerate(keep):
            if not isinstance(fb, str) or not fb.strip():
                raise DataError(path, n, f"gpt4_feedback[{j}]", "empty or not a string")
            out.append({"prompt": dialogue_messages(parts["instruction"]), "response": parts["response"],
                        "feedback": fb.strip(), "id": f"{row.get('idx')}:{row.get('response_source')}:{j}"})
    return out


def read_feedback(src: str | Path, feedback_per_item: int = 1, data_dir: str | Path | None = None) -> list[dict]:
    """Feedback examples from a built-in source name or a file, validated (``path:line: field: problem``)."""
    key = str(src)
    if key in PROMETHEUS:
        from ..data.shared import data_root

        root = Path(data_dir) if data_dir else data_root()
        return prometheus_feedback(root / "prometheus_ratings" / PROMETHEUS[key], feedback_per_item)
    from ..data.io import iter_objects

    out = []
    for line, o in iter_objects(src):
        try:
            prompt: Prompt = check_prompt(o.get("prompt"))
            out.append({"prompt": prompt, "response": check_text(o.get("response", o.get("completion")), "response"),
                        "feedback": check_text(o.get("feedback"), "feedback"), "id": o.get("id")})
        except FieldError as e:
            raise DataError(src, line, e.field, e.problem) from None
    if not out:
        raise DataError(src, None, None, "no records")
    return out


def sft_rows(examples: list[dict]) -> list[dict]:
    """TRL conversational prompt-completion rows: role-swapped context, feedback as the assistant turn."""
    return [{"prompt": roleswap_messages(e["prompt"], e["response"]),
             "completion": [{"role": "assistant", "content": e["feedback"]}]} for e in examples]


def _n_tokens(tokenizer, messages: list[dict]) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def fit_rows(rows: list[dict], tokenizer, max_length: int) -> tuple[list[dict], int, int]:
    """Fit each row into ``max_length`` tokens by cutting the *oldest* context: earlier turns go
    first, then the start of the oldest remaining turn (the response's end and the feedback are
    kept whole). Returns the rows kept, how many were cut, how many dropped (feedback alone too long)."""
    out, cut, dropped = [], 0, 0
    for r in rows:
        msgs = [dict(m) for m in r["prompt"]]
        full = msgs + r["completion"]
        n = _n_tokens(tokenizer, full)
        if n <= max_length:
            out.append(r)
            continue
        cut += 1
        while n > max_length and len(msgs) > 2:  # keep the system message and the response turn
            msgs.pop(1)
            n = _n_tokens(tokenizer, msgs + r["completion"])
        body, keep = msgs[-1]["content"], len(msgs[-1]["content"])
        while n > max_length:
            keep = min(keep - 1, int(keep * max(0.0, 1 - (n - max_length) / max(n, 1)) * 0.95))
            if keep < 20:
                break
            msgs[-1]["content"] = "..." + body[len(body) - keep:]
            n = _n_tokens(tokenizer, msgs + r["completion"])
        if n > max_length:
            dropped += 1
            continue
        out.append({"prompt": msgs, "completion": r["completion"]})
    return out, cut, dropped


def build_trainer(cfg: FollowupSFTConfig, model=None, tokenizer=None, examples: list[dict] | None = None):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ..models import load_model

    if examples is None:
        examples = read_feedback(cfg.data, cfg.feedback_per_item)
    if cfg.limit:
        examples = examples[:cfg.limit]
    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device="auto", padding_side="right")
    args = {"completion_only_loss": True, **common_args(cfg)}  # a `trl:` block in the recipe wins
    rows, cut, dropped = fit_rows(sft_rows(examples), tokenizer, cfg.max_length)
    if cut:
        import warnings

        warnings.warn(f"{cut} of {len(examples)} examples exceed max_length={cfg.max_length} tokens: their oldest "
                      f"context was cut ({dropped} dropped: the feedback alone is too long)")
    if not rows:
        raise FinealignError(f"no example fits max_length={cfg.max_length} tokens")
    ds = Dataset.from_list(rows)
    peft = lora_config(cfg.lora_r, cfg.lora_alpha) if cfg.lora else None
    return SFTTrainer(model=model, args=SFTConfig(**args), train_dataset=ds, processing_class=tokenizer,
                      peft_config=peft), tokenizer


def train_followup(cfg: FollowupSFTConfig, *, model=None, tokenizer=None, examples=None) -> TrainResult:
    """Fine-tune a follow-up model per ``cfg``; saved (model or LoRA adapter + tokenizer) to ``cfg.out``."""
    trainer, tok = build_trainer(cfg, model, tokenizer, examples)
    return train_and_save(trainer, cfg, tok, "followup-sft")
