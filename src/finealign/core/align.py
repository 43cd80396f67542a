"""Edit alignment: (original, edited) texts -> changed character spans -> per-token labels.

A minimal edit turns a less-preferred response ``original`` (y_l) into a better ``edited`` (y_w).
The diff between them gives three kinds of tokens (DESIGN.md, "Edit alignment"):

* E_l: tokens of ``original`` that were replaced or deleted   (label 1 on the original side),
* E_w: tokens of ``edited`` that were replaced or inserted    (label 1 on the edited side),
* unchanged tokens                                            (label 0 on either side).

The diff is computed on *text*, never on token ids, and then mapped to token offsets. Diffing
token ids would create fake changes wherever byte-level BPE merges a changed word with its
neighbours differently in the two texts (``" cat."`` vs ``" cats."``); diffing words and mapping
the changed character ranges onto each tokenization separately does not.

Pipeline (all pure functions, no model calls)::

    diff_char_spans(original, edited)   -> (spans in original, spans in edited)   [(start, end) chars]
    spans_to_token_labels(offsets, spans) -> [0/1 per token]
    align_edit(original, edited, tok)   -> EditAlignment (ids, labels, offsets of both sides)
    edit_ratio(original, edited)        -> fraction of original words replaced or deleted

Character offsets are Python ``str`` indices (code points), the convention of Hugging Face fast
tokenizers' ``offset_mapping``. Spans are half-open ``[start, end)``, sorted, non-overlapping.

Unicode normal forms are no edit: units are compared in NFC (``"café"`` written with a combining
accent equals the precomposed one), while every offset and span indexes the *original* strings
as given, so token offsets of either text map onto them unchanged.

Word units: a run of letters/digits/underscore (with combining marks attached), one CJK
ideograph or kana, one punctuation mark or symbol (an emoji with its modifiers, variation
selectors and zero-width-joiner sequence is one unit), or a run of whitespace. Whitespace is
never content: the word diff matches the non-whitespace units only, changed spans carry no
leading or trailing whitespace, and a change that touches only whitespace (``"a b"`` ->
``"a  b"``, a removed blank line) gives no span at all. Known limit: a word moved elsewhere
counts as deleted in one place and inserted in another (difflib finds no moves).
"""

from __future__ import annotations

import bisect
import difflib
import unicodedata
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

Span = tuple[int, int]

__all__ = [
    "EditAlignment", "Unit", "align_edit", "diff_char_spans", "diff_units", "edit_ratio", "inserts_at_end", "nfc",
    "same_text",
    "spans_to_token_labels", "split_units", "token_offsets",
]

GRANULARITIES = ("word", "char")


class Unit(NamedTuple):
    """One diff unit of a text: its characters and its ``[start, end)`` range."""

    text: str
    start: int
    end: int


# ----------------------------------------------------------------------------------------------
# Splitting text into diff units


_ZWJ = "\u200d"


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (
        0x3040 <= o <= 0x30FF  # hiragana, katakana
        or 0x3400 <= o <= 0x4DBF  # CJK ext A
        or 0x4E00 <= o <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= o <= 0xFAFF  # CJK compatibility ideographs
        or 0x20000 <= o <= 0x3134F  # CJK ext B-G
    )


def _is_attachment(ch: str) -> bool:
    """Characters that belong to the previous unit: combining marks, variation selectors,
    emoji skin-tone modifiers, zero-width joiner."""
    if ch == _ZWJ:
        return True
    o = ord(ch)
    if 0xFE00 <= o <= 0xFE0F or 0x1F3FB <= o <= 0x1F3FF or 0xE0020 <= o <= 0xE007F:
        return True
    return unicodedata.category(ch).startswith("M")


def _char_class(ch: str) -> str:
    if ch.isspace():
        return "space"
    if _is_cjk(ch):
        return "single"
    cat = unicodedata.category(ch)
    if cat[0] in "LN" or ch == "_":
        return "word"
    return "single"  # punctuation, symbols, emoji


def split_units(text: str) -> list[Unit]:
    """Split ``text`` into diff units (see the module docstring); they tile the text exactly.

    >>> [u.text for u in split_units("Hi, café!")]
    ['Hi', ',', ' ', 'café', '!']
    """
    units: list[Unit] = []
    start = 0
    cls = None  # class of the unit being built
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if cls is not None and cls != "space":
            # attach marks/modifiers/ZWJ, and the character right after a ZWJ, to the current unit
            if _is_attachment(ch) or (text[i - 1] == _ZWJ):
                i += 1
                continue
        c = _char_class(ch)
        if cls is not None and c == cls and c in ("word", "space"):
            i += 1
            continue
        if cls is not None:
            units.append(Unit(text[start:i], start, i))
        start, cls = i, c
        i += 1
    if cls is not None:
        units.append(Unit(text[start:n], start, n))
    return units


# ----------------------------------------------------------------------------------------------
# Diffing


def nfc(text: str) -> str:
    """``text`` in Unicode normal form C (the form units are compared in)."""
    return unicodedata.normalize("NFC", text)


def same_text(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` are the same text: equal in NFC once leading/trailing whitespace is
    stripped (an edit, a preference pair, ... that changes nothing)."""
    return a == b or nfc(a).strip() == nfc(b).strip()


def _clusters(text: str) -> list[Unit]:
    """Non-whitespace characters with their combining marks (``e`` + U+0301 is one cluster)."""
    out: list[Unit] = []
    for i, ch in enumerate(text):
        if out and out[-1].end == i and _is_attachment(ch) and not ch.isspace():
            out[-1] = Unit(out[-1].text + ch, out[-1].start, i + 1)
        elif not ch.isspace():
            out.append(Unit(ch, i, i + 1))
    return out


def _opcodes(a: Sequence[str], b: Sequence[str]) -> list[tuple[str, int, int, int, int]]:
    """difflib opcodes of ``a`` -> ``b``, computed in a canonical order so that swapping the two
    inputs swaps the result exactly (difflib's tie-breaking is otherwise order-dependent)."""
    if list(a) <= list(b):
        return difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    swapped = difflib.SequenceMatcher(None, b, a, autojunk=False).get_opcodes()
    flip = {"delete": "insert", "insert": "delete"}
    return [(flip.get(tag, tag), i1, i2, j1, j2) for tag, j1, j2, i1, i2 in swapped]


def diff_units(original: str, edited: str) -> tuple[list[Unit], list[Unit], list[tuple[str, int, int, int, int]]]:
    """Word-unit diff: (non-whitespace units of original, of edited, difflib opcodes over them).

    Whitespace units are left out of the matching: whitespace is never content, and thousands
    of identical ``" "`` units make difflib both slower and prone to anchoring on spaces.
    """
    ua = [u for u in split_units(original) if not u.text.isspace()]
    ub = [u for u in split_units(edited) if not u.text.isspace()]
    return ua, ub, _opcodes([nfc(u.text) for u in ua], [nfc(u.text) for u in ub])


def _trim(text: str, start: int, end: int) -> Span | None:
    """``[start, end)`` without leading/trailing whitespace; None if nothing but whitespace is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _merge(spans: Sequence[Span]) -> list[Span]:
    """Sort spans and merge overlapping ones (touching spans stay separate)."""
    out: list[Span] = []
    for s, e in sorted((int(s), int(e)) for s, e in spans if e > s):
        if out and s < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def diff_char_spans(original: str, edited: str, *, granularity: str = "word") -> tuple[list[Span], list[Span]]:
    """Character spans changed between ``original`` and ``edited``.

    Returns ``(spans_original, spans_edited)``: the ``[start, end)`` ranges of ``original`` that
    were replaced or deleted, and the ranges of ``edited`` that were replaced or inserted, sorted
    and non-overlapping. A pure deletion has a span in ``original`` only, a pure insertion a span
    in ``edited`` only. Spans are trimmed of leading/trailing whitespace; whitespace-only
    changes give no span. Swapping the two texts swaps the two lists.

    ``granularity="word"`` (default) diffs the non-whitespace word units (``split_units``: words,
    single punctuation marks/symbols/CJK characters) with difflib's SequenceMatcher (no junk
    heuristic) and maps the changed units to character offsets: ``"the cat sat"`` ->
    ``"the dog sat"`` gives ``([(4, 7)], [(4, 7)])``. ``granularity="char"`` diffs characters:
    ``"cat"`` -> ``"cut"`` gives ``([(1, 2)], [(1, 2)])``.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if not isinstance(original, str) or not isinstance(edited, str):
        raise TypeError("original and edited must be strings")
    if original == edited or nfc(original) == nfc(edited):
        return [], []
    if granularity == "char":  # non-whitespace characters (with their marks): whitespace changes are no change
        ca, cb = _clusters(original), _clusters(edited)
        a_bounds = [(u.start, u.end) for u in ca]
        b_bounds = [(u.start, u.end) for u in cb]
        ops = _opcodes([nfc(u.text) for u in ca], [nfc(u.text) for u in cb])
    else:
        ua, ub, ops = diff_units(original, edited)
        a_bounds = [(u.start, u.end) for u in ua]
        b_bounds = [(u.start, u.end) for u in ub]
    sa: list[Span] = []
    sb: list[Span] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        if i2 > i1:  # replace / delete
            t = _trim(original, a_bounds[i1][0], a_bounds[i2 - 1][1])
            if t:
                sa.append(t)
        if j2 > j1:  # replace / insert
            t = _trim(edited, b_bounds[j1][0], b_bounds[j2 - 1][1])
            if t:
                sb.append(t)
    return _merge(sa), _merge(sb)


# ----------------------------------------------------------------------------------------------
# Spans -> token labels


def spans_to_token_labels(offsets: Sequence[Any], spans: Sequence[Span], *, text: str | None = None) -> list[int]:
    """Per-token 0/1 labels: 1 where a token's character range overlaps a changed span.

    Contract (what the token reward-model trainer relies on):

    * ``offsets``: one ``(start, end)`` per token (T,), in the *same coordinate system as the
      spans*: character offsets into the text that was diffed. When a response is tokenized
      inside a chat template, subtract the response's start character from every offset first;
      template and prompt tokens then fall outside ``[0, len(response)]`` (negative, or past the
      end) and get 0 (also special tokens such as ``<|im_end|>`` whose offsets are non-empty
      but start at ``len(response)``). Find the start with ``full_text.rindex(response)``; if a
      chat template alters the response (strips it), diff the altered response instead, so
      offsets and spans index the same string. Lists, tuples, ``.tolist()`` rows all work.
    * A token with an empty range (``end <= start``, e.g. special tokens with ``(0, 0)``) or a
      ``None`` offset gets 0. Several tokens may share one character (byte-level BPE pieces of
      one emoji); each of them gets the label of that character.
    * Overlap is strict: a token ``[3, 7)`` and a span ``[7, 9)`` do not overlap.
    * Spans from ``diff_char_spans`` carry no leading/trailing whitespace, so a token such as
      ``" cat"`` next to a changed word is not labelled by the shared space alone. If you pass
      other spans, also pass ``text`` (the diffed text): an overlap that is only whitespace in
      ``text`` is then ignored.

    Returns a list of T ints in {0, 1} (never longer or shorter than ``offsets``).
    """
    merged = _merge(spans)
    starts = [s for s, _ in merged]
    ends = [e for _, e in merged]
    labels: list[int] = []
    for off in offsets:
        if off is None:
            labels.append(0)
            continue
        s, e = int(off[0]), int(off[1])
        if e <= s or not merged:
            labels.append(0)
            continue
        k = bisect.bisect_right(ends, s)  # first span ending after the token's start
        hit = 0
        while k < len(merged) and starts[k] < e:
            lo, hi = max(s, starts[k]), min(e, ends[k])
            if lo < hi and (text is None or not text[lo:hi].isspace()):
                hit = 1
                break
            k += 1
        labels.append(hit)
    return labels


# ----------------------------------------------------------------------------------------------
# Whole-edit alignment


@dataclass(frozen=True)
class EditAlignment:
    """Token-level alignment of one minimal edit.

    ``original_ids`` / ``edited_ids``: token ids (T_l,) / (T_w,) of each text tokenized alone,
    without special tokens; ``*_labels``: 1 for changed tokens (E_l: replaced or deleted in the
    original; E_w: replaced or inserted in the edited text), 0 for unchanged ones; ``*_offsets``:
    each token's ``(start, end)`` character range in its text; ``*_spans``: the changed character
    spans from ``diff_char_spans``.
    """

    original_ids: list[int]
    original_labels: list[int]
    original_offsets: list[Span]
    edited_ids: list[int]
    edited_labels: list[int]
    edited_offsets: list[Span]
    original_spans: list[Span] = field(default_factory=list)
    edited_spans: list[Span] = field(default_factory=list)

    def __post_init__(self):
        if not (len(self.original_ids) == len(self.original_labels) == len(self.original_offsets)):
            raise ValueError("original_ids, original_labels and original_offsets differ in length")
        if not (len(self.edited_ids) == len(self.edited_labels) == len(self.edited_offsets)):
            raise ValueError("edited_ids, edited_labels and edited_offsets differ in length")

    @property
    def n_changed(self) -> tuple[int, int]:
        """(changed tokens in the original, changed tokens in the edited text)."""
        return sum(self.original_labels), sum(self.edited_labels)


def token_offsets(text: str, tokenizer) -> tuple[list[int], list[Span]]:
    """Token ids and character offsets of ``text`` tokenized alone (no special tokens).

    Needs a fast (Rust) tokenizer, which provides ``return_offsets_mapping``.
    """
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as e:  # slow tokenizers
        raise ValueError(f"tokenizer {type(tokenizer).__name__} gives no character offsets; use a fast tokenizer") from e
    ids = list(enc["input_ids"])
    offs = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    return ids, offs


def align_edit(original: str, edited: str, tokenizer, *, granularity: str = "word") -> EditAlignment:
    """Align one minimal edit to token labels under ``tokenizer``.

    Each text is tokenized alone (``add_special_tokens=False``, ``return_offsets_mapping=True``);
    the changed character spans from ``diff_char_spans`` are mapped onto each side's token
    offsets with ``spans_to_token_labels``. Identical texts give all-zero labels.
    """
    sa, sb = diff_char_spans(original, edited, granularity=granularity)
    ids_a, off_a = token_offsets(original, tokenizer)
    ids_b, off_b = token_offsets(edited, tokenizer)
    return EditAlignment(
        original_ids=ids_a, original_labels=spans_to_token_labels(off_a, sa, text=original), original_offsets=off_a,
        edited_ids=ids_b, edited_labels=spans_to_token_labels(off_b, sb, text=edited), edited_offsets=off_b,
        original_spans=sa, edited_spans=sb,
    )


def inserts_at_end(original: str, edited: str) -> bool:
    """Whether the edit inserts content after the original's last word (only punctuation of the original
    may follow the insertion point): ``"Dogs run."`` -> ``"Dogs run and bark."`` is, ``"Dogs run."`` ->
    ``"Big dogs run."`` is not. Such an edit says that the original stopped too early, so the token
    labels mark the original's stop token as changed (the token-reward contract: what is missing at the
    end is judged at the stop token)."""
    if original == edited or nfc(original) == nfc(edited):
        return False
    ua, _, ops = diff_units(original, edited)
    for tag, i1, i2, j1, j2 in ops:
        if tag == "insert" and all(not any(c.isalnum() for c in u.text) for u in ua[i1:]):
            return True
    return False


# ----------------------------------------------------------------------------------------------
# Minimality


def edit_ratio(original: str, edited: str, *, include_inserted: bool = False) -> float:
    """Fraction of the original's words (non-whitespace units) that were replaced or deleted.

    0.0 for identical texts and for whitespace-only changes; 1.0 for a full rewrite. A pure
    insertion changes no original word, so it scores 0.0 unless ``include_inserted=True``, which
    adds the number of inserted words of ``edited`` to the numerator (the ratio may then exceed
    1). An original without words gives 0.0 if ``edited`` has none either, else 1.0.

    Example: ``"the cat sat on the mat"`` -> ``"the dog sat on the mat"``: 1 of 6 words, 0.1667.
    """
    if original == edited or nfc(original) == nfc(edited):
        return 0.0
    ua, ub, ops = diff_units(original, edited)
    n_words = len(ua)
    changed = inserted = 0
    for tag, i1, i2, j1, j2 in ops:
        if tag in ("replace", "delete"):
            changed += i2 - i1
        if tag == "insert":
            inserted += j2 - j1
    if n_words == 0:
        return 0.0 if not ub else 1.0
    return (changed + (inserted if include_inserted else 0)) / n_words
