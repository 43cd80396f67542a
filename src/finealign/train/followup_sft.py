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

from ..config import non_negative, positive, setting
from ..data.chat import is_rendered, trl_completion
from ..data.records import FieldError, Prompt, check_prompt, check_text
from ..errors import DataError, FinealignError
from ..rewards.roleswap import roleswap_messages
from .trl_common import TrainResult, TRLTrainArgs, common_args, lora_config, train_and_save

PROMETHEUS = {"prometheus-vicuna": "vicuna_eval.json", "prometheus-mt-bench": "mt_bench_eval.json"}


@dataclass(kw_only=True)
class FollowupSFTConfig(TRLTrainArgs):
    """Follow-up SFT with TRL (every field is a flag of ``finealign train followup-sft`` and a YAML key).

    ``max_length``: longer examples lose their oldest context in TRL's truncation.
    """

    data: str = setting(None, reads="file", short="-d", required=True,
                        help="prompt/response/feedback file, or prometheus-vicuna | prometheus-mt-bench (GPT-4 "
                             "feedback).")
    model: str = setting("smollm2-135m-instruct", reads="model", short="-m",
                         help="Model to fine-tune (built-in name, .gguf file, directory or hub id).")
    feedback_per_item: int = setting(1, check=non_negative,
                                     help="Built-in sources: feedback texts kept per item (0 = all 3).")
    limit: int = setting(0, check=non_negative, help="Use the first N examples (0 = all).")
    learning_rate: float = setting(1e-4, flag="--lr", deprecated=("--learning-rate",), check=positive,
                                   help="Learning rate.")
    lora: bool = setting(True, deprecated_off=("--full",), help="Train LoRA adapters instead of all weights.")


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
            out.append({"prompt": prompt, "response": check_text(o.get("response", o.get("completion")), "response",
                                                                 allow_empty=True),  # feedback on saying nothing
                        "feedback": check_text(o.get("feedback"), "feedback"), "id": o.get("id")})
        except FieldError as e:
            raise DataError(src, line, e.field, e.problem) from None
    if not out:
        raise DataError(src, None, None, "no records")
    return out


def sft_rows(examples: list[dict], tokenizer=None) -> list[dict]:
    """TRL conversational prompt-completion rows: role-swapped context, feedback as the assistant turn.

    Raises ``FinealignError`` for a prompt that already carries ``tokenizer``'s chat template
    (``data.chat.is_rendered``): it cannot be role-swapped.
    """
    for i, e in enumerate(examples):
        if tokenizer is not None and is_rendered(e["prompt"], tokenizer):
            raise FinealignError(f"example {e.get('id') or i + 1}: the prompt already carries the chat template, so it "
                                 "cannot be role-swapped for the follow-up model; give the plain prompt or messages")
    return [{"prompt": roleswap_messages(e["prompt"], e["response"]),
             "completion": trl_completion(e["feedback"], conversational=True)} for e in examples]


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
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, padding_side="right")
    args = {"completion_only_loss": True, **common_args(cfg)}  # a `trl:` block in the recipe wins
    rows, cut, dropped = fit_rows(sft_rows(examples, tokenizer), tokenizer, cfg.max_length)
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


def train_followup(cfg: FollowupSFTConfig, *, model=None, tokenizer=None, examples=None, on_step=None) -> TrainResult:
    """Fine-tune a follow-up model per ``cfg``; saved (model or LoRA adapter + tokenizer) to ``cfg.out``.
    ``on_step(step, total, metrics)`` is called every optimizer step."""
    trainer, tok = build_trainer(cfg, model, tokenizer, examples)
    return train_and_save(trainer, cfg, tok, "followup-sft", on_step=on_step)
