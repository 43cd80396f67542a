"""Chat messages and chat rendering: the one place where a (prompt, response) meets a tokenizer.

Message shapes (everything TRL 1.16 passes, and what finealign's readers accept):

* ``{"role", "content": str}``;
* ``content`` as a list of typed blocks, ``[{"type": "text", "text": ...}, ...]`` (TRL's
  multimodal path, the OpenAI API): the text blocks are joined (no separator); a block of any
  other type (an image) is an error, since finealign's models read text only;
* an assistant turn with ``tool_calls`` and ``content`` None or empty, and ``tool`` turns (the
  tool's answer, with its ``name``). Roles: ``system``, ``user``, ``assistant``, ``tool``.

``normalize_message`` turns any of them into ``{"role", "content": str}`` (plus ``tool_calls``,
``name``, ``tool_call_id`` when given), the form every other module reads. A completion given as
messages reads as the text of its assistant turns (``completion_text``); tool calls read as
``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` (the Hermes / Qwen markup) whenever the
chat template cannot render them itself.

Rendering policy (one for generation, every scorer, the token RM, the trainers and the export):

* A prompt is rendered with the tokenizer's chat template and the assistant turn opened
  (``render_prompt``): what a model generates from.
* A (prompt, response) is that text, the response verbatim, then the template's end of turn
  (``render_pair``; ``<|im_end|>\\n`` for ChatML): the turn is always *closed* for scoring. Causal
  token scorers (direct, token RM) are unaffected by what follows the response; a sequence
  classifier reads the closed turn the way reward models are trained.
* A string prompt that already carries the template (it contains one of the tokenizer's special
  tokens that the template uses, e.g. ``<|im_start|>``) is used **as it is**, never wrapped again;
  if it ends with a closed turn, the assistant turn is opened after it. Only where a prompt must be
  restructured (role-swapping for a follow-up model, TRL's conversational format) is a rendered
  prompt an error, which says so.
* A tokenizer without a chat template: the prompt's text (a single user message is its content;
  other messages are ``role: content`` paragraphs), a blank line, then the response; no end marker.

Padding: ``pad_right`` (scoring, training) and ``pad_left`` (generation) build ``(N, T)`` tensors.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence, Union

from ..errors import FinealignError

if TYPE_CHECKING:
    import torch

Message = dict[str, Any]  # {"role", "content": str} (+ "tool_calls", "name", "tool_call_id")
Prompt = Union[str, list[Message]]

ROLES = ("system", "user", "assistant", "tool")


class FieldError(ValueError):
    """A problem with one field of one record (or one message): readers turn it into
    ``path:line: field: problem``."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def as_messages(prompt: Prompt) -> list[Message]:
    """A prompt as a list of chat messages (a string becomes one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)

__all__ = ["ROLES", "EncodedPair", "FieldError", "Message", "Prompt", "as_messages", "RenderedPair", "TurnText", "completion_text", "content_text", "encode_pair",
           "encode_with_span", "generation_prompt_text", "has_template", "is_rendered", "message_text",
           "normalize_message", "normalize_messages", "normalize_prompt", "pad_left", "pad_right", "plain_text",
           "render_messages", "render_pair", "render_prompt", "render_turn", "template_markers", "tool_calls_text",
           "trl_completion", "trl_prompt", "turn_end_text"]


# ============================================================================ message shapes


def content_text(content: Any, name: str = "content") -> str:
    """The text of a message ``content``: a string, None (""), or a list of typed text blocks.

    Raises ``FieldError(name, ...)`` for a non-text block or any other type.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if isinstance(content, list):
        parts = []
        for i, b in enumerate(content):
            if not isinstance(b, dict):
                raise FieldError(f"{name}[{i}]", f"expected a text block, got {type(b).__name__}")
            kind = b.get("type", "text")
            if kind != "text":
                raise FieldError(f"{name}[{i}]", f"only text blocks can be read, got a block of type {kind!r}")
            text = b.get("text")
            if not isinstance(text, str):
                raise FieldError(f"{name}[{i}].text", f"expected a string, got {type(text).__name__}")
            parts.append(text)
        return "".join(parts)
    raise FieldError(name, f"expected a string or a list of text blocks, got {type(content).__name__}")


def _normalize_tool_calls(calls: Any, name: str) -> list[dict]:
    if not isinstance(calls, list):
        raise FieldError(name, f"expected a list of tool calls, got {type(calls).__name__}")
    out = []
    for i, c in enumerate(calls):
        if not isinstance(c, dict):
            raise FieldError(f"{name}[{i}]", f"expected a tool call object, got {type(c).__name__}")
        fn = c.get("function", c)  # OpenAI / TRL nest {"name", "arguments"} under "function"
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise FieldError(f"{name}[{i}].function.name", "missing")
        args = fn.get("arguments", {})
        if not isinstance(args, (dict, str)):
            raise FieldError(f"{name}[{i}].function.arguments", f"expected an object or a string, got {type(args).__name__}")
        call = {"type": c.get("type", "function"), "function": {"name": fn["name"], "arguments": args}}
        if isinstance(c.get("id"), str):
            call["id"] = c["id"]
        out.append(call)
    return out


def tool_calls_text(calls: Sequence[dict]) -> str:
    """Tool calls as text: ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` per call."""
    parts = []
    for c in calls:
        fn = c.get("function", c)
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        parts.append("<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": args}, ensure_ascii=False)
                     + "\n</tool_call>")
    return "\n".join(parts)


def normalize_message(m: Any, name: str = "message") -> Message:
    """One message of any accepted shape as ``{"role", "content": str}`` (+ ``tool_calls``, ``name``,
    ``tool_call_id``). An empty content is an error unless the turn carries tool calls or is a
    tool's answer. Raises ``FieldError``."""
    if not isinstance(m, dict):
        raise FieldError(name, f"expected a message object, got {type(m).__name__}")
    role = m.get("role")
    if role not in ROLES:
        raise FieldError(f"{name}.role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    content = content_text(m.get("content"), f"{name}.content")
    out: Message = {"role": role, "content": content}
    if m.get("tool_calls"):
        if role != "assistant":
            raise FieldError(f"{name}.tool_calls", f"only assistant turns call tools, not {role}")
        out["tool_calls"] = _normalize_tool_calls(m["tool_calls"], f"{name}.tool_calls")
    for key in ("name", "tool_call_id"):
        if isinstance(m.get(key), str) and m[key]:
            out[key] = m[key]
    if not content.strip() and "tool_calls" not in out and role != "tool":
        raise FieldError(f"{name}.content", "empty" if m.get("content") is not None else "missing")
    return out


def normalize_messages(value: Any, name: str = "prompt") -> list[Message]:
    """A non-empty list of messages, each normalised (``normalize_message``)."""
    if not isinstance(value, list):
        raise FieldError(name, f"expected a list of messages, got {type(value).__name__}")
    if not value:
        raise FieldError(name, "empty message list")
    return [normalize_message(m, f"{name}[{i}]") for i, m in enumerate(value)]


def normalize_prompt(value: Any, name: str = "prompt") -> Prompt:
    """A prompt: a non-empty string (kept as is) or a non-empty list of messages (normalised)."""
    if isinstance(value, str):
        if not value.strip():
            raise FieldError(name, "empty")
        return value
    if isinstance(value, list):
        return normalize_messages(value, name)
    if value is None:
        raise FieldError(name, "missing")
    raise FieldError(name, f"expected a string or a list of messages, got {type(value).__name__}")


def message_text(m: Message) -> str:
    """What one (normalised) message says: its content, then its tool calls as text."""
    calls = m.get("tool_calls")
    if not calls:
        return m["content"]
    return (m["content"] + "\n" if m["content"] else "") + tool_calls_text(calls)


def completion_text(value: Any, name: str = "completion") -> str:
    """A response given as text, a list of text blocks, one message, or a list of messages (TRL's
    conversational completion): the text of its assistant turns (content and tool calls), joined
    by newlines; tool answers are not the model's words and are left out. Empty is allowed."""
    if value is None:
        raise FieldError(name, "missing")
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "role" in value:
        value = [value]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        msgs = [_assistant(m, f"{name}[{i}]") if m.get("role") == "assistant" else normalize_message(m, f"{name}[{i}]")
                for i, m in enumerate(value)]
        return "\n".join(message_text(m) for m in msgs if m["role"] == "assistant")
    if isinstance(value, dict) or (isinstance(value, list) and value and all(isinstance(b, dict) for b in value)):
        return content_text(value, name)
    what = "a string, messages or text blocks" if isinstance(value, (list, dict)) else "a string"
    raise FieldError(name, f"expected {what}, got {type(value).__name__}")


def _assistant(m: dict, name: str) -> Message:
    """An assistant message of a completion (its content may be empty: the model said nothing)."""
    out: Message = {"role": "assistant", "content": content_text(m.get("content"), f"{name}.content")}
    if m.get("tool_calls"):
        out["tool_calls"] = _normalize_tool_calls(m["tool_calls"], f"{name}.tool_calls")
    return out


# ============================================================================ the template


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _cached(tokenizer, key: str, compute):
    """Per-tokenizer (and per-template) memo of template facts."""
    try:
        memo = _CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable
        return compute()
    k = (key, getattr(tokenizer, "chat_template", None))
    if k not in memo:
        memo[k] = compute()
    return memo[k]


def template_markers(tokenizer) -> tuple[str, ...]:
    """The tokenizer's special tokens that its chat template writes (``<|im_start|>``, ...)."""
    def compute():
        tpl = getattr(tokenizer, "chat_template", None)
        if not isinstance(tpl, str):
            return ()
        specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
        for t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
            if getattr(t, "special", False):
                specials.add(str(t))
        return tuple(sorted((s for s in specials if s and s in tpl), key=len, reverse=True))

    return _cached(tokenizer, "markers", compute)


def is_rendered(prompt: Prompt, tokenizer) -> bool:
    """True when ``prompt`` is a string that already carries ``tokenizer``'s chat template."""
    return isinstance(prompt, str) and any(m in prompt for m in template_markers(tokenizer))


def _supports_tools(tokenizer) -> bool:
    tpl = getattr(tokenizer, "chat_template", None)
    return isinstance(tpl, str) and "tool_calls" in tpl


def _template_messages(tokenizer, messages: Sequence[Message]) -> list[dict]:
    """Messages as the template receives them: content as text (blocks joined, None as ""), tool
    calls folded into the text unless the template renders them itself."""
    keep_calls = _supports_tools(tokenizer)
    out = []
    for i, m in enumerate(messages):
        try:
            m = {**m, "content": content_text(m.get("content"), f"messages[{i}].content")}
            if m.get("tool_calls"):
                m["tool_calls"] = _normalize_tool_calls(m["tool_calls"], f"messages[{i}].tool_calls")
        except FieldError as e:
            raise FinealignError(str(e)) from None
        if m.get("tool_calls") and not keep_calls:
            out.append({"role": m["role"], "content": message_text(m)})
        else:
            out.append(m)
    return out


def render_messages(tokenizer, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
    """``messages`` through the chat template (``FinealignError`` when there is none or it fails)."""
    if not has_template(tokenizer):
        raise FinealignError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template")
    try:
        return tokenizer.apply_chat_template(_template_messages(tokenizer, messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except FinealignError:
        raise
    except Exception as e:  # jinja's TemplateError, a template's raise_exception(...)
        raise FinealignError(f"the chat template cannot render these messages: {type(e).__name__}: {e}") from None


_ANCHOR = [{"role": "user", "content": "x"}]
_MARK = "\u2063finealign\u2063"  # invisible separator: never in real text, never stripped by templates


def generation_prompt_text(tokenizer) -> str:
    """The text the template adds to open the assistant turn (ChatML: ``<|im_start|>assistant\\n``)."""
    def compute():
        if not has_template(tokenizer):
            return ""
        a = render_messages(tokenizer, _ANCHOR)
        b = render_messages(tokenizer, _ANCHOR, add_generation_prompt=True)
        return b[len(a):] if b.startswith(a) else ""

    return _cached(tokenizer, "genprompt", compute)


def turn_end_text(tokenizer) -> str:
    """The text the template writes after an assistant turn's content (ChatML: ``<|im_end|>\\n``)."""
    def compute():
        if not has_template(tokenizer):
            return ""
        full = render_messages(tokenizer, _ANCHOR + [{"role": "assistant", "content": _MARK}])
        i = full.rfind(_MARK)
        if i < 0:
            return tokenizer.eos_token or ""
        return full[i + len(_MARK):]

    return _cached(tokenizer, "turnend", compute)


def plain_text(prompt: Prompt) -> str:
    """A prompt as plain text (no template): a string or a single user message is its text; other
    messages are ``role: content`` paragraphs."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        return message_text(prompt[0])
    return "\n\n".join(f"{m['role']}: {message_text(m)}" for m in prompt)


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The model input a response follows: the chat template with the assistant turn opened.

    A string that already carries the template is used as it is (an assistant turn is opened after
    it when it ends with a closed turn); without a template, the prompt's text and a blank line.
    """
    if is_rendered(prompt, tokenizer):
        gen, end = generation_prompt_text(tokenizer), turn_end_text(tokenizer)
        body = prompt.rstrip()
        if gen and end.strip() and body.endswith(end.strip()) and not prompt.endswith(gen):
            return body[: len(body) - len(end.strip())] + end + gen
        return prompt
    if not has_template(tokenizer):
        return plain_text(prompt) + "\n\n"
    return render_messages(tokenizer, as_messages(prompt), add_generation_prompt=True)


@dataclass(frozen=True)
class RenderedPair:
    """``text[start:end]`` is the response, verbatim; ``text[:start]`` is ``render_prompt``'s text."""

    text: str
    start: int
    end: int


def render_pair(tokenizer, prompt: Prompt, response: str, *, close: bool = True) -> RenderedPair:
    """A (prompt, response) as one text: ``render_prompt(prompt) + response (+ turn_end_text)``.

    ``close`` (every scorer, the token RM) ends the assistant turn; ``close=False`` leaves it open.
    For ChatML templates (the default and the tiny model) the closed text equals the template's own
    rendering of the prompt's messages plus the assistant message.
    """
    prefix = render_prompt(tokenizer, prompt)
    text = prefix + response + (turn_end_text(tokenizer) if close else "")
    return RenderedPair(text, len(prefix), len(prefix) + len(response))


@dataclass(frozen=True)
class TurnText:
    """``full = context + segment``; the new turn's content is ``segment[start:end]``."""

    context: str
    segment: str
    start: int
    end: int


def _locate(seg: str, seg_empty: str, content: str) -> tuple[int, int] | None:
    """Where ``content`` sits in ``seg``: the place whose removal leaves the empty turn's text."""
    for text in (content, content.strip()):
        i = seg.find(text)
        while i >= 0 and text:
            if seg[:i] + seg[i + len(text):] == seg_empty:
                return i, i + len(text)
            i = seg.find(text, i + 1)
    return None


def render_turn(tokenizer, context: list[Message] | str, role: str, content: str) -> TurnText:
    """Render ``context`` + one more ``role`` turn and locate its content in the added text.

    ``context`` is a list of messages (rendered with the template) or the already rendered text of
    a conversation ending with a closed assistant turn (``render_pair(...).text``); for the latter
    the added text is what the template adds after an assistant turn. The content is located where
    the added text minus the content equals the text the template adds for an empty turn, so a
    content string that also occurs in the markup is not mistaken. Raises ``FinealignError``.
    """
    if isinstance(context, str):
        ctx = context
        base = _ANCHOR + [{"role": "assistant", "content": "y"}]
    else:
        ctx = render_messages(tokenizer, context)
        base = list(context)
    anchor = render_messages(tokenizer, base)
    full = render_messages(tokenizer, base + [{"role": role, "content": content}])
    empty = render_messages(tokenizer, base + [{"role": role, "content": ""}])
    if not full.startswith(anchor) or not empty.startswith(anchor):
        raise FinealignError("the chat template renders a conversation differently once a turn is added "
                             "(the context is not a prefix); this scorer cannot share the context")
    seg, seg_empty = full[len(anchor):], empty[len(anchor):]
    where = _locate(seg, seg_empty, content)
    if where is None:
        raise FinealignError("cannot locate the turn's text in the chat template's output")
    return TurnText(ctx, seg, where[0], where[1])


# ============================================================================ tokens


def encode_with_span(tokenizer, text: str, start: int, end: int) -> tuple[list[int], list[bool], list[tuple[int, int]]]:
    """Token ids of ``text`` (no added special tokens), which tokens overlap ``text[start:end]``,
    and every token's character offsets in ``text``."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    inside = [e > start and s < end for s, e in offs]
    return list(enc["input_ids"]), inside, offs


@dataclass(frozen=True)
class EncodedPair:
    """A rendered (prompt, response) as tokens.

    ``input_ids`` (T,); ``response_mask`` (T,) True on tokens that overlap the response text;
    ``offsets`` (T,) each token's (start, end) relative to the response's first character
    (prompt and template tokens end at or before 0; the end-of-turn tokens start at or after
    ``len(response)``); ``response_start`` the response's first character in ``text``.
    """

    input_ids: list[int]
    response_mask: list[bool]
    offsets: list[tuple[int, int]]
    text: str
    response_start: int


def encode_pair(tokenizer, prompt: Prompt, response: str, *, close: bool = True) -> EncodedPair:
    """``render_pair`` tokenized (no added special tokens), with the response's tokens marked."""
    r = render_pair(tokenizer, prompt, response, close=close)
    ids, inside, offs = encode_with_span(tokenizer, r.text, r.start, r.end)
    rel = [(s - r.start, e - r.start) for s, e in offs]
    return EncodedPair(ids, inside, rel, r.text, r.start)


def with_stop_token(enc: EncodedPair, response_len: int, eos_id: int | None) -> EncodedPair:
    """``enc`` with the response's stop token marked as part of the response (the token-reward contract,
    docs/token-rewards.md): the first token after the response text (the chat template's end of turn,
    or the first template token after an empty response) gets ``response_mask`` True and the
    zero-width offset ``(len, len)``. Without a token after the response (no chat template), ``eos_id``
    is appended as the stop token; with no ``eos_id`` either, ``enc`` is returned unchanged."""
    ids, inside, offs = list(enc.input_ids), list(enc.response_mask), list(enc.offsets)
    last = max((k for k, m in enumerate(inside) if m), default=None)
    if last is not None:
        k = last + 1
    else:  # an empty response: the first token at or after where it would start
        k = next((j for j, (s0, _) in enumerate(offs) if s0 >= 0), len(ids))
    if k >= len(ids):
        if eos_id is None:
            return enc
        ids, inside, offs = ids + [int(eos_id)], inside + [False], offs + [(response_len, response_len)]
    inside[k] = True
    offs[k] = (response_len, response_len)
    return EncodedPair(ids, inside, offs, enc.text, enc.response_start)


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int, *masks: Sequence[Sequence]
              ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Right-pad N sequences to (N, T), T the longest: ``(input_ids, attention_mask, [each extra
    per-token mask as (N, T) bool, False on padding])``."""
    return _pad(seqs, pad_id, masks, left=False)


def pad_left(seqs: Sequence[Sequence[int]], pad_id: int, *masks: Sequence[Sequence]
             ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Left-pad N sequences to (N, T) (generation: every row's last token in the last column); the
    same outputs as ``pad_right``. An empty sequence is a row of padding."""
    return _pad(seqs, pad_id, masks, left=True)


def _pad(seqs, pad_id, masks, *, left: bool):
    import torch  # here, so that reading data (and the CLI's start) does not load torch

    n = len(seqs)
    T = max([len(s) for s in seqs] + [0])
    ids = torch.full((n, T), int(pad_id if pad_id is not None else 0), dtype=torch.long)
    att = torch.zeros((n, T), dtype=torch.long)
    extra = [torch.zeros((n, T), dtype=torch.bool) for _ in masks]
    for i, s in enumerate(seqs):
        L = len(s)
        if not L:
            continue
        sl = slice(T - L, T) if left else slice(0, L)
        ids[i, sl] = torch.as_tensor(list(s), dtype=torch.long)
        att[i, sl] = 1
        for m, src in zip(extra, masks):
            m[i, sl] = torch.as_tensor([bool(v) for v in src[i]], dtype=torch.bool)
    return ids, att, extra


# ============================================================================ TRL's formats


def trl_prompt(prompt: Prompt, *, conversational: bool, tokenizer=None, where: str = "prompt"):
    """A prompt in TRL's format: chat messages (``conversational``) or one string.

    Standard format: with a ``tokenizer`` every prompt is rendered (``render_prompt``), so a file
    holds one format; without one, a string or a single user message is its text and anything else
    is an error. Conversational format: a prompt that already carries a template cannot become
    messages, which is an error (use the standard format).
    """
    if conversational:
        if tokenizer is not None and is_rendered(prompt, tokenizer) or _looks_rendered(prompt):
            raise FinealignError(f"{where}: the prompt already carries a chat template, so it cannot be written as "
                                 "chat messages; use the standard format")
        return as_messages(prompt)
    if tokenizer is not None:
        return render_prompt(tokenizer, prompt)
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user" and not prompt[0].get("tool_calls"):
        return prompt[0]["content"]
    raise FinealignError(f"{where}: prompt has {len(prompt)} messages; the standard format needs a tokenizer to "
                         "render it with the chat template (--tokenizer), or use the conversational format")


_COMMON_MARKERS = ("<|im_start|>", "<|start_header_id|>", "<start_of_turn>", "<|begin_of_text|>")


def _looks_rendered(prompt: Prompt) -> bool:
    """Without a tokenizer: the special tokens of the common chat templates (ChatML, Llama 3, Gemma)."""
    return isinstance(prompt, str) and any(m in prompt for m in _COMMON_MARKERS)


def trl_completion(text: str, *, conversational: bool):
    """A completion in TRL's format: ``[{"role": "assistant", "content": text}]`` or the string."""
    return [{"role": "assistant", "content": text}] if conversational else text
