"""Edit alignment: hand-worked character spans, token labels, invariants, real tokenizers."""

from __future__ import annotations

import random

import pytest

from finealign.core.align import (EditAlignment, align_edit, diff_char_spans, edit_ratio, spans_to_token_labels,
                                  split_units)


def texts(s: str, spans):
    return [s[a:b] for a, b in spans]


# ------------------------------------------------------------------ diff_char_spans, hand-worked

def test_replacement():
    # "the cat sat" units: the|' '|cat|' '|sat ; "cat" -> "dog" is one replaced unit at chars 4..7 on both sides
    assert diff_char_spans("the cat sat", "the dog sat") == ([(4, 7)], [(4, 7)])
    # different lengths: "cat"(4,7) -> "elephant"(4,12)
    assert diff_char_spans("the cat sat", "the elephant sat") == ([(4, 7)], [(4, 12)])


def test_insertion_only():
    # "the cat" -> "the big cat": units inserted "big", " " at edited chars 4..8, trimmed -> (4, 7)
    # the original has no span for a pure insertion
    assert diff_char_spans("the cat", "the big cat") == ([], [(4, 7)])


def test_deletion_only():
    # "the big cat" -> "the cat": "big " (4..8) deleted, trimmed to "big" (4, 7); no span in edited
    assert diff_char_spans("the big cat", "the cat") == ([(4, 7)], [])


def test_whitespace_only_changes_give_no_spans():
    # only whitespace units differ: " " -> "  ", "\n\n" -> "\n", trailing space added
    assert diff_char_spans("a b", "a  b") == ([], [])
    assert diff_char_spans("one.\n\nTwo.", "one.\nTwo.") == ([], [])
    assert diff_char_spans("end", "end ") == ([], [])
    assert edit_ratio("a b", "a  b") == 0.0


def test_punctuation_changes():
    # "Hello, world." units: Hello|,|' '|world|.   "Hello world!" units: Hello|' '|world|!
    # "," (5,6) deleted; "." (12,13) replaced by "!" (11,12)
    assert diff_char_spans("Hello, world.", "Hello world!") == ([(5, 6), (12, 13)], [(11, 12)])
    # word followed by punctuation: only the word changes, the "." stays unchanged
    assert diff_char_spans("It is red.", "It is blue.") == ([(6, 9)], [(6, 10)])


def test_unicode_accents_cjk_emoji():
    # accents are word characters: "café" is one unit (4..8), replaced by "thé" (4..7)
    assert diff_char_spans("Un café noir", "Un thé noir") == ([(3, 7)], [(3, 6)])
    # a combining accent stays with its letter: "e\u0301" is one unit with "t": "te\u0301" at (0, 3)
    s = "te\u0301 chaud"
    assert [u.text for u in split_units(s)] == ["te\u0301", " ", "chaud"]
    assert diff_char_spans(s, "cafe\u0301 chaud") == ([(0, 3)], [(0, 5)])
    # CJK: each ideograph/kana is a unit: 我喜欢猫 -> 我喜欢狗 changes only char 3
    assert diff_char_spans("我喜欢猫", "我喜欢狗") == ([(3, 4)], [(3, 4)])
    # emoji with a skin-tone modifier is one unit of 2 code points; "😀" (5,6) -> "👍🏽" (5,7)
    assert diff_char_spans("nice 😀!", "nice 👍🏽!") == ([(5, 6)], [(5, 7)])
    # ZWJ family emoji is one unit: 5 code points at 0..5
    fam = "👨\u200d👩\u200d👧"
    assert [u.text for u in split_units(fam + " hi")] == [fam, " ", "hi"]
    assert diff_char_spans(fam + " hi", "hi") == ([(0, 5)], [])


def test_identical_texts():
    for s in ["", "x", "the cat sat.", "  spaced  ", "日本"]:
        assert diff_char_spans(s, s) == ([], [])
        assert diff_char_spans(s, s, granularity="char") == ([], [])
        assert edit_ratio(s, s) == 0.0


def test_edits_at_start_and_end():
    # first word: "A" (0,1) -> "The" (0,3)
    assert diff_char_spans("A cat sat", "The cat sat") == ([(0, 1)], [(0, 3)])
    # last word: "sat" (6,9) -> "slept" (6,11)
    assert diff_char_spans("A cat sat", "A cat slept") == ([(6, 9)], [(6, 11)])
    # appended sentence: " It purred." inserted at 10..21, trimmed -> (11, 21)
    assert diff_char_spans("A cat sat.", "A cat sat. It purred.") == ([], [(11, 21)])
    # deleted first word "Well," (0..5) + " " -> trimmed (0, 5)
    assert diff_char_spans("Well, a cat sat.", "a cat sat.") == ([(0, 5)], [])
    # empty side: everything of the other side
    assert diff_char_spans("", "hi there") == ([], [(0, 8)])
    assert diff_char_spans("hi there", "") == ([(0, 8)], [])


def test_multiple_edits():
    # "The capital of France is Lyon and it is small."
    #  T0-3 ' ' capital4-11 ' ' of12-14 ' ' France15-21 ' ' is22-24 ' ' Lyon25-29 ' ' and30-33 ' ' it34-36 ' ' is37-39 ' ' small40-45 .45-46
    a = "The capital of France is Lyon and it is small."
    b = "The capital of France is Paris and it is large."
    # Lyon(25,29)->Paris(25,30); small(40,45)->large(41,46) (shifted by the 1 extra char of Paris)
    assert diff_char_spans(a, b) == ([(25, 29), (40, 45)], [(25, 30), (41, 46)])
    assert texts(a, [(25, 29), (40, 45)]) == ["Lyon", "small"]
    # 2 of 20 non-space units (10 words + 1 "." = 11 units) -> 2/11
    assert edit_ratio(a, b) == pytest.approx(2 / 11)


def test_char_granularity():
    # char diff: "cat" -> "cut": only 'a' (1,2) -> 'u' (1,2)
    assert diff_char_spans("cat", "cut", granularity="char") == ([(1, 2)], [(1, 2)])
    # word diff of the same: the whole word
    assert diff_char_spans("cat", "cut") == ([(0, 3)], [(0, 3)])
    # whitespace changes are no change at char granularity either (spaces doubled, a newline, a trailing space)
    assert diff_char_spans("a b c", "a  b\nc ", granularity="char") == ([], [])
    # "a cat" -> "a  cut": 'a'(3,4) -> 'u'(4,5); the extra space shifts the edited offset by one
    assert diff_char_spans("a cat", "a  cut", granularity="char") == ([(3, 4)], [(4, 5)])
    with pytest.raises(ValueError):
        diff_char_spans("a", "b", granularity="line")


# ------------------------------------------------------------------ spans_to_token_labels

def test_spans_to_token_labels_hand_worked():
    # text "the cat sat", tokens: "the"(0,3) " cat"(3,7) " sat"(7,11); span (4,7) = "cat"
    offsets = [(0, 3), (3, 7), (7, 11)]
    assert spans_to_token_labels(offsets, [(4, 7)]) == [0, 1, 0]
    # strict overlap: a token ending where the span starts is not labelled
    assert spans_to_token_labels([(0, 4), (4, 5)], [(4, 6)]) == [0, 1]
    # special tokens with empty offsets and None get 0
    assert spans_to_token_labels([(0, 0), (0, 3), None, (5, 5)], [(0, 10)]) == [0, 1, 0, 0]
    # no spans -> all 0; no tokens -> []
    assert spans_to_token_labels(offsets, []) == [0, 0, 0]
    assert spans_to_token_labels([], [(0, 3)]) == []


def test_spans_to_token_labels_ignores_whitespace_overlap_with_text():
    text = "the big cat"
    # an untrimmed span "big " (4,8) would touch the space of " cat"(7,11); with text it is ignored
    offsets = [(0, 3), (3, 7), (7, 11)]
    assert spans_to_token_labels(offsets, [(4, 8)]) == [0, 1, 1]
    assert spans_to_token_labels(offsets, [(4, 8)], text=text) == [0, 1, 0]


def test_spans_to_token_labels_chat_template_relative_offsets():
    # The trainer subtracts the response's start char from offsets of a full chat-template tokenization:
    # template tokens end up negative or past the end and must get 0; lists (JSON) work as offsets.
    offsets = [[-20, -10], [-10, -1], [-1, 0], [0, 3], [3, 7], [7, 11], [11, 21], [0, 0]]
    assert spans_to_token_labels(offsets, [(4, 7)]) == [0, 0, 0, 0, 1, 0, 0, 0]


def test_spans_many_tokens_per_char():
    # byte-level BPE: three tokens all with offsets (5,6) for one emoji; all labelled when it changed
    assert spans_to_token_labels([(0, 5), (5, 6), (5, 6), (5, 6), (6, 7)], [(5, 6)]) == [0, 1, 1, 1, 0]


# ------------------------------------------------------------------ invariants

CASES = [
    ("the cat sat", "the dog sat"),
    ("the cat", "the big cat"),
    ("the big cat", "the cat"),
    ("a b", "a  b"),
    ("Hello, world.", "Hello world!"),
    ("Un café noir", "Un thé noir"),
    ("我喜欢猫", "我喜欢狗"),
    ("nice 😀!", "nice 👍🏽!"),
    ("", "something"),
    ("a a a b", "a b"),
    ("x y x y", "y x y x"),
    ("The capital of France is Lyon and it is small.", "The capital of France is Paris and it is large."),
]


def _random_pairs(n=40, seed=0):
    rng = random.Random(seed)
    vocab = ["the", "cat", "sat", ",", ".", " ", "  ", "\n", "é", "日", "😀", "dog", "a"]
    out = []
    for _ in range(n):
        a = "".join(rng.choice(vocab) + rng.choice(["", " "]) for _ in range(rng.randint(0, 12)))
        toks = list(a.split(" "))
        for _ in range(rng.randint(0, 3)):
            if toks:
                toks[rng.randrange(len(toks))] = rng.choice(vocab)
        out.append((a, " ".join(toks)))
    return out


@pytest.mark.parametrize("gran", ["word", "char"])
def test_invariants(gran):
    for a, b in CASES + _random_pairs():
        sa, sb = diff_char_spans(a, b, granularity=gran)
        # swapping original/edited swaps the spans
        assert diff_char_spans(b, a, granularity=gran) == (sb, sa), (a, b)
        # spans lie inside the texts, sorted, non-overlapping, never whitespace at the ends
        for s, spans in ((a, sa), (b, sb)):
            prev = -1
            for x, y in spans:
                assert 0 <= x < y <= len(s) and x >= prev
                assert not s[x].isspace() and not s[y - 1].isspace()
                prev = y
        # outside the spans, the texts are the same sequence of non-space characters
        def keep(s, spans):
            mask = [True] * len(s)
            for x, y in spans:
                for i in range(x, y):
                    mask[i] = False
            return "".join(c for c, m in zip(s, mask) if m and not c.isspace())
        if gran == "char":
            assert keep(a, sa) == keep(b, sb), (a, b)
        r = edit_ratio(a, b)
        assert 0.0 <= r <= 1.0
        assert (r == 0.0) == (not sa) or not a.strip(), (a, b, r, sa)


def test_edit_ratio_hand_worked():
    # 6 words, 1 replaced -> 1/6
    assert edit_ratio("the cat sat on the mat", "the dog sat on the mat") == pytest.approx(1 / 6)
    # full rewrite -> 1
    assert edit_ratio("red apples", "blue cars") == 1.0
    # pure insertion changes no original word: 0; counting insertions: 2 inserted / 2 words = 1
    assert edit_ratio("the cat", "the big fat cat") == 0.0
    assert edit_ratio("the cat", "the big fat cat", include_inserted=True) == 1.0
    # deletion of 1 of 3 words
    assert edit_ratio("the big cat", "the cat") == pytest.approx(1 / 3)
    # an original without words
    assert edit_ratio("", "new") == 1.0 and edit_ratio(" ", "  ") == 0.0


# ------------------------------------------------------------------ align_edit with real tokenizers

def _check_one_word_change(tok, a, b, word_a, word_b):
    """Only tokens overlapping the changed word are labelled, on both sides, and all of them are."""
    al = align_edit(a, b, tok)
    assert isinstance(al, EditAlignment)
    for text, word, offs, labs in ((a, word_a, al.original_offsets, al.original_labels),
                                   (b, word_b, al.edited_offsets, al.edited_labels)):
        ws = text.index(word)
        we = ws + len(word)
        expected = [int(e > s and min(e, we) > max(s, ws)) for s, e in offs]
        assert labs == expected, [(text[s:e], l) for (s, e), l in zip(offs, labs)]
        assert sum(labs) >= 1
        # the labelled tokens cover the word and nothing but (at most) a leading space
        lab = [(s, e) for (s, e), l in zip(offs, labs) if l]
        assert text[min(s for s, _ in lab):max(e for _, e in lab)].strip() == word
    return al


def test_align_edit_tiny_tokenizer(tiny):
    _, tok = tiny
    # the tiny byte-level BPE splits "cat" as " c" + "at" and "sat" as " s" + "at": the "at" token of " sat"
    # has the same id as the one of " cat" but must stay unlabelled.
    al = _check_one_word_change(tok, "The cat sat on the mat.", "The dog sat on the mat.", "cat", "dog")
    assert len(al.original_labels) == len(al.original_ids) == len(al.original_offsets)
    # a change whose BPE merges differ on both sides: "cats." -> "cat." in the same sentence
    _check_one_word_change(tok, "I like cats.", "I like dogs.", "cats", "dogs")
    _check_one_word_change(tok, "Paris is the capital.", "Lyon is the capital.", "Paris", "Lyon")
    # identical texts: no labels at all, and the two sides tokenize identically
    same = align_edit("Nothing changes here.", "Nothing changes here.", tok)
    assert sum(same.original_labels) == sum(same.edited_labels) == 0
    assert same.original_ids == same.edited_ids
    # whitespace-only edit: no labels
    ws = align_edit("a  b", "a b", tok)
    assert sum(ws.original_labels) == sum(ws.edited_labels) == 0
    # unicode: an emoji changes into several byte tokens, all labelled, nothing else
    _check_one_word_change(tok, "Great job 😀 today", "Great job 👍 today", "😀", "👍")
    # insertion only: the original has no labels
    ins = align_edit("The cat sat.", "The cat quietly sat.", tok)
    assert sum(ins.original_labels) == 0 and sum(ins.edited_labels) >= 1
    # swap invariant at the token level
    sw = align_edit("The dog sat on the mat.", "The cat sat on the mat.", tok)
    assert sw.original_labels == al.edited_labels and sw.edited_labels == al.original_labels


def test_labels_inside_chat_template(tiny):
    """The trainer's path: tokenize prompt + response with the chat template, shift offsets to the
    response start, label with the spans of the response alone. Template tokens (including the
    special ``<|im_end|>`` right after the response, whose offsets are non-empty) must get 0, and the
    response tokens must get the same labels as the response tokenized alone."""
    _, tok = tiny
    original, edited = "It is Lyon, I think.", "It is Paris, I think."
    sa, _ = diff_char_spans(original, edited)  # "Lyon" = (6, 10)
    assert sa == [(6, 10)]
    msgs = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": original}]
    full = tok.apply_chat_template(msgs, tokenize=False)
    start = full.rindex(original)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    rel = [(s - start, e - start) for s, e in enc["offset_mapping"]]
    labels = spans_to_token_labels(rel, sa, text=original)
    assert len(labels) == len(enc["input_ids"])
    in_resp = [i for i, (s, e) in enumerate(rel) if 0 <= s and e <= len(original) and e > s]
    # every labelled token is a response token, and they spell exactly "Lyon"
    assert all(i in in_resp for i, l in enumerate(labels) if l)
    assert "".join(full[enc["offset_mapping"][i][0]:enc["offset_mapping"][i][1]] for i, l in enumerate(labels) if l).strip() == "Lyon"
    alone = align_edit(original, edited, tok)
    assert [labels[i] for i in in_resp] == alone.original_labels


@pytest.mark.slow
def test_align_edit_default_tokenizer():
    from finealign.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    _check_one_word_change(tok, "The capital of France is Lyon.", "The capital of France is Paris.", "Lyon", "Paris")
    _check_one_word_change(tok, "It was a terrible, awful day.", "It was a wonderful, awful day.", "terrible", "wonderful")
    _check_one_word_change(tok, "Die Straße ist naß.", "Die Straße ist nass.", "naß", "nass")
    al = _check_one_word_change(tok, "The cat sat on the mat.", "The dog sat on the mat.", "cat", "dog")
    # SmolLM2 keeps " cat" and " dog" as single tokens: exactly one label per side
    assert sum(al.original_labels) == 1 and sum(al.edited_labels) == 1
