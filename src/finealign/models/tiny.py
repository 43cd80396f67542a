"""Tiny random causal LMs for tests: a real (byte-level BPE) tokenizer with a ChatML chat
template, built locally, so no network is needed.

The tokenizer is trained on a small built-in corpus, so it encodes any text (byte
fallback) and has word pieces; the model is a 2-layer Llama with random weights.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """The quick brown fox jumps over the lazy dog. What is the capital of France? Paris is
the capital of France. That answers my question perfectly. That's not what I asked. Thank you,
this is helpful. Could you explain it again? The answer is wrong; please check the facts.
Write a short poem about the sea. Summarize the article in one sentence. The model response
was edited to fix an error, keeping everything else verbatim. Human: Assistant: user system
assistant 0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' " ( ) [ ] { } - + * / = < > @ # $ % & _ | ~
"""


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ChatML specials and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(tokenizer, *, seed: int = 0, hidden_size: int = 32, layers: int = 2):
    """A random 2-layer ``LlamaForCausalLM`` sized to ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    gen = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    torch.random.set_rng_state(gen)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def ensure_tiny_model(target: Path, *, seed: int = 0) -> Path:
    """Build the tiny random model into ``target`` once (atomic: temp dir + rename)."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        tok = build_tiny_tokenizer()
        model = build_tiny_model(tok, seed=seed)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
