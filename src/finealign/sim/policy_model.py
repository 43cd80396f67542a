"""The pieces of a small task policy (``finealign sim policy``): its tokenizer, its model, its SFT batches.

* ``train_tokenizer``: a byte-level BPE (Hugging Face ``tokenizers``) trained on a task's own text, with
  ChatML specials and a chat template without a system turn: ``<|im_start|>user\\n{prompt}<|im_end|>\\n
  <|im_start|>assistant\\n{answer}<|im_end|>``. The end of turn ``<|im_end|>`` is the EOS token (what
  generation stops at and what PPO rewards as the stop token); ``<|endoftext|>`` pads. Byte-level BPE
  encodes any text and decodes it back unchanged.
* ``build_model``: a ``LlamaForCausalLM`` from scratch (tied input/output embeddings).
* ``sft_batch``: prompt + answer token ids, with labels on the answer and its EOS only (-100 elsewhere).
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import torch

from .answers import synth_answer
from .base import SimTask

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
IGNORE = -100


def task_corpus(task: SimTask, seed: int, n: int) -> list[str]:
    """Text to train a tokenizer on: ``n`` of the task's prompts, two synthetic answers to each (error rate
    0.5, so wrong answers are in it too), and the role names of the chat template. Deterministic in ``seed``."""
    rng = random.Random(f"{seed}/tokenizer")
    insts = task.sample(rng, min(n, prompt_capacity(task, n)))
    texts = ["user\n", "assistant\n"]
    for inst in insts:
        texts.append(inst.prompt)
        texts += [synth_answer(task, inst, rng, 0.5) for _ in range(2)]
    return texts


def prompt_capacity(task: SimTask, n: int) -> int:
    """How many distinct prompts the task can make, at most ``n`` (facts has a small pool)."""
    from math import comb

    if task.name == "facts":
        return min(n, sum(comb(len(task.table[r]), task.options.slots) for r in task.relations))
    return n


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE ``PreTrainedTokenizerFast`` of at most ``vocab_size`` tokens trained on ``texts``,
    with the specials and chat template of the module docstring (left padding, for generation)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=PAD, padding_side="left", clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, *, hidden_size: int, layers: int, heads: int, seed: int, max_positions: int = 512):
    """A ``LlamaForCausalLM`` of ``layers`` x ``hidden_size`` (SwiGLU width 8/3 x hidden, rounded up to 16;
    ``heads`` attention heads, as many key/value heads), tied embeddings, initialised from ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=16 * math.ceil(hidden_size * 8 / 3 / 16),
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    torch.random.set_rng_state(state)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def encode_example(tokenizer, prompt_text: str, answer: str) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one SFT example: the rendered prompt (chat template, assistant turn opened),
    then the answer and EOS; labels are the ids on the answer and EOS, ``IGNORE`` on the prompt. The prompt
    and the answer are tokenized apart, as generation sees them (prompt tokens, then sampled tokens)."""
    p = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p + a, [IGNORE] * len(p) + a


def sft_batch(tokenizer, task: SimTask, prompts: Sequence, rng: random.Random, error_rate: float
              ) -> dict[str, torch.Tensor]:
    """One right-padded SFT batch: a synthetic answer (``sim.answers``) to each prompt instance.

    Returns ``input_ids``, ``attention_mask`` and ``labels``, each (B, T) long.
    """
    from ..data.chat import render_prompt

    rows = [encode_example(tokenizer, render_prompt(tokenizer, inst.prompt), synth_answer(task, inst, rng, error_rate))
            for inst in prompts]
    T = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
