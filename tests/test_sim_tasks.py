"""Simulated tasks: hand-worked gold scores and spans, the oracle edit is minimal and maximal, noise knobs."""

from __future__ import annotations

import random

import pytest

from finealign.core.align import diff_char_spans
from finealign.errors import DataError, FinealignError
from finealign.sim import NotGenerated, gold_token_labels, gold_token_rewards, make_task, oracle_edit
from finealign.sim.annotator import Noise, annotate_edit, preference
from finealign.sim.base import scored_units, unit_offsets

FACTS_Q = ("What are the capitals of these countries?\n- France\n- Japan\n- Peru\n"
           "Answer with one line per country, as 'Country: Capital'.")


def spans(text, j):
    return [(text[m.start:m.end], round(m.reward, 4), m.fix) for m in j.mentions]


# ------------------------------------------------------------------------------------------ facts

def test_facts_hand_worked():
    t = make_task("facts")
    inst = t.parse(FACTS_Q)
    assert inst.fields == {"relation": "capital", "subjects": ["France", "Japan", "Peru"]}
    r = "The capital of France is Paris. The capital of Japan is Kyoto, not Osaka. Peru: Rome"
    j = t.judge(inst, r)
    # Paris: nearest subject France, right: +1/3. Kyoto/Osaka are no capitals: unseen. Rome: nearest
    # subject Peru, wrong: -1/3, fixed to Lima. Japan: missing, -1/3 at the end, appended.
    # Score 1/3 - 1/3 - 1/3 = -1/3.
    assert spans(r, j) == [("Paris", 0.3333, None), ("Rome", -0.3333, "Lima"),
                           ("", -0.3333, "\nThe capital of Japan is Tokyo.")]
    assert j.score == pytest.approx(-1 / 3)
    assert j.wrong_spans == [(r.index("Rome"), len(r))]
    assert j.append == "\nThe capital of Japan is Tokyo."
    edited = oracle_edit(r, j)
    assert edited == r[:-4] + "Lima\nThe capital of Japan is Tokyo."
    assert t.judge(inst, edited).score == pytest.approx(1.0)


def test_facts_association_swaps_and_unassociated():
    t = make_task("facts")
    inst = t.parse(FACTS_Q)
    # each capital sits next to the wrong country: both wrong (-1/3 each), fixed by swapping; Peru is
    # missing (-1/3): score -1
    r = "The capital of France is Tokyo. The capital of Japan is Paris."
    j = t.judge(inst, r)
    assert spans(r, j)[:2] == [("Tokyo", -0.3333, "Paris"), ("Paris", -0.3333, "Tokyo")]
    assert j.score == pytest.approx(-1.0)
    # no subject in the sentence: Lima credits Peru (+1/3), Berlin is wrong and becomes the answer of the
    # first missing subject (France), Japan is missing and appended: 1/3 - 1/3 - 1/3 = -1/3
    r2 = "Lima is lovely. Berlin too."
    j2 = t.judge(inst, r2)
    assert spans(r2, j2)[:2] == [("Lima", 0.3333, None), ("Berlin", -0.3333, "Paris")]
    assert j2.score == pytest.approx(-1 / 3) and j2.missing == 1
    assert t.judge(inst, oracle_edit(r2, j2)).score == pytest.approx(1.0)


def test_facts_single_slot_and_symbols_case_sensitive():
    t = make_task("facts", "slots=1,relations=element")
    inst = t.sample(random.Random(0), 1)[0]
    sym = inst.fields["subjects"][0]
    gold = t.table["element"][[f.subject for f in t.table["element"]].index(sym)].answer
    assert inst.prompt == f"Which chemical element has the symbol {sym}? Answer in one sentence."
    assert t.judge(inst, f"{gold.lower()} has the symbol {sym}.").score == 1.0  # long names: any case
    assert t.judge(inst, "").score == -1.0  # saying nothing costs as much as a wrong answer


def test_facts_bad_tables(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("relation,subject\ncapital,France\n")
    with pytest.raises(DataError, match="lacks column.*answer"):
        make_task("facts", table=str(p))
    p.write_text("relation,subject,answer\ncapital,France,\n")
    with pytest.raises(DataError, match=r"t.csv:2: answer: empty"):
        make_task("facts", table=str(p))
    p.write_text("relation,subject,answer\nx,A,B\nx,B,C\nx,D,E\n")
    with pytest.raises(DataError, match="both a subject and an answer"):
        make_task("facts", table=str(p))


def test_facts_custom_table_generic_question(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("relation,subject,answer\ncolour,sky,blue\ncolour,grass,green\n")
    t = make_task("facts", "slots=1", table=str(p))
    inst = t.parse("What is the colour of grass? Answer in one sentence.")
    assert t.judge(inst, "Grass is green.").score == 1.0
    assert t.judge(inst, "Grass is blue.").score == -1.0


# ------------------------------------------------------------------------------------------ constraints

def test_constraints_hand_worked():
    t = make_task("constraints")
    prompt = ("Write one sentence about dogs. Use the words 'loyal' and 'park'. "
              "Do not use the letter 'y' or the words just, really and very.")
    inst = t.parse(prompt)
    assert inst.fields == {"topic": "dogs", "required": ["loyal", "park"], "letter": "y",
                           "banned": ["just", "really", "very"]}
    r = "A very loyal dog plays in the park."
    j = t.judge(inst, r)
    # very: banned word AND has 'y' -> one violation (-0.25); loyal has 'y' -> violation (-0.25), so it
    # never counts as used: missing (-1/2); plays has 'y' -> -0.25; park: +1/2.
    # Score 0.5 - 3 * 0.25 - 0.5 = -0.75.
    # The missing word is inserted before the final period, as a person would: " and loyal".
    assert spans(r, j) == [("very", -0.25, ""), ("loyal", -0.25, ""), ("plays", -0.25, ""), ("park", 0.5, None),
                           ("", -0.5, " and loyal")]
    assert j.score == pytest.approx(-0.75)
    assert oracle_edit(r, j) == "A   dog  in the park and loyal."
    # where each reward lands (causal): every word on itself (a character closes it), the missing word at
    # the stop unit (len, len)
    assert [m.reward_span for m in j.mentions] == [(2, 6), (7, 12), (17, 22), (30, 34), (len(r), len(r))]
    # an unfinished last word is decided at the stop: "park" at the very end of the text
    j2 = t.judge(inst, "A dog in the park")
    assert [m.reward_span for m in j2.mentions] == [(17, 17), (17, 17)]
    assert t.judge(inst, "").append == "Loyal and park."


def test_constraints_generator_never_requires_banned_letter():
    t = make_task("constraints")
    for inst in t.sample(random.Random(1), 200):
        f = inst.fields
        assert not any(f["letter"] in w for w in f["required"])
        assert t.judge(inst, oracle_edit("", t.judge(inst, ""))).score == 1.0
        assert t.parse(inst.prompt) == inst


# ------------------------------------------------------------------------------------------ arithmetic

def test_arithmetic_hand_worked():
    t = make_task("arithmetic")
    p = "Anna has 7 stickers. She buys 5 more. She gives away 3. How many stickers does Anna have now? Answer in one sentence."
    inst = t.parse(p)
    assert inst.fields["answer"] == 9  # 7 + 5 - 3
    r = "7 + 5 = 13, and 13 - 3 = 10 stickers."
    j = t.judge(inst, r)
    # 13 is the value of no '7 + 5' (12): -0.5, judged when written (on "13", closed by the comma);
    # '13 - 3 = 10' is a right step; 10 is the final answer, wrong (9): -1, judged on the whole response, so
    # at the stop unit. It is a step's result: fixing it in place would make the step wrong, so the oracle
    # restates the answer. Score -1.5.
    assert spans(r, j) == [("13", -0.5, "12"), ("", -1.0, "\nThe answer is 9.")]
    assert [m.reward_span for m in j.mentions] == [(8, 10), (len(r), len(r))]
    assert j.score == pytest.approx(-1.5)
    edited = oracle_edit(r, j)
    assert edited == "7 + 5 = 12, and 13 - 3 = 10 stickers.\nThe answer is 9."
    assert t.judge(inst, edited).score == 1.0
    # a last number that is no step's result is fixed in place; its reward is still at the stop
    r2 = "She has 10 stickers."
    j2 = t.judge(inst, r2)
    assert spans(r2, j2) == [("10", -1.0, "9")] and j2.mentions[0].reward_span == (len(r2), len(r2))
    assert oracle_edit(r2, j2) == "She has 9 stickers."
    assert t.judge(inst, "She has nine.").score == 1.0  # number words count
    j0 = t.judge(inst, "I cannot say.")
    assert j0.score == -1.0 and j0.append == "\nThe answer is 9."  # no answer costs as much as a wrong one


# ------------------------------------------------------------------------------------------ all tasks

RESPONSES = {
    "facts": ["Paris, Rome, Tokyo: France, Japan, Peru:", "Lima is the capital of Peru. Berlin, Madrid.",
              "Oslo\nCanberra\nRiga", "I think it is Cairo or maybe Moscow, Russia."],
    "constraints": ["The very quiet piano played a soft song.", "Just a walk in the park with my dog.",
                    "Snow, ice and a warm coat: winter is cold and really dark."],
    "arithmetic": ["3 + 4 = 8 so the answer is 12.", "He has 2 * 3 = 6, then 6 + 1 = 9 apples.", "Twenty!"],
}


@pytest.mark.parametrize("name", ["facts", "constraints", "arithmetic"])
def test_oracle_is_minimal_and_maximal(name):
    t = make_task(name)
    rng = random.Random(7)
    for inst in t.sample(rng, 30):
        for r in RESPONSES[name] + [""]:
            j = t.judge(inst, r)
            assert j.score == pytest.approx(sum(m.reward for m in j.mentions)) and j.score <= 1.0
            edited = oracle_edit(r, j)
            assert t.judge(inst, edited).score == pytest.approx(1.0)  # the edit reaches the maximum
            changed, _ = diff_char_spans(r, edited)
            wrong = j.wrong_spans
            # minimal: every changed (non-space) character of the original lies in a wrong span (the word diff
            # may merge neighbouring wrong spans with the whitespace between them), and every wrong span changed
            inside = lambda k: any(a <= k < b for a, b in wrong)  # noqa: E731
            assert all(inside(k) for s, e in changed for k in range(s, e) if not r[k].isspace()), (r, edited)
            assert all(any(s < b and a < e for s, e in changed) for a, b in wrong), (r, edited)
            # gold per token: rewards on the word units and the stop unit add up to the score; labels mark
            # the wrong spans
            assert sum(gold_token_rewards(j, scored_units(r))) == pytest.approx(j.score)
            offs = unit_offsets(r)
            labels = gold_token_labels(j, offs, r)
            assert sum(labels) == sum(1 for s, e in offs if any(s < b and a < e for a, b in wrong))


@pytest.mark.parametrize("name", ["facts", "constraints", "arithmetic"])
def test_prompts_round_trip_and_foreign_prompts_refused(name):
    t = make_task(name)
    insts = t.sample(random.Random(3), 20)
    assert len({i.prompt for i in insts}) == 20
    assert insts == t.sample(random.Random(3), 20)  # seeded
    for i in insts:
        assert t.parse(i.prompt) == i
    with pytest.raises(NotGenerated):
        t.parse("What is the meaning of life?")
    with pytest.raises(NotGenerated, match="not generated"):
        t.judge_prompt(insts[0].prompt + " Please.", "x")


def test_unknown_task_and_options():
    with pytest.raises(FinealignError, match="unknown sim task 'poems'"):
        make_task("poems")
    with pytest.raises(FinealignError, match="unknown option 'slot'"):
        make_task("facts", "slot=2")
    with pytest.raises(FinealignError, match="only 52 distinct"):
        make_task("facts", "slots=1,relations=element").sample(random.Random(0), 53)


# ------------------------------------------------------------------------------------------ noise

def _edit_pool(n=300):
    t = make_task("constraints")
    insts = t.sample(random.Random(11), n)
    r = "A very big dog runs really fast in the yard, just barking."
    return t, [(i, t.judge(i, r)) for i in insts], r


def test_noise_p_miss_statistics():
    t, pool, r = _edit_pool()
    rng = random.Random(0)
    fixed = missed = 0
    for inst, j in pool:
        e = annotate_edit(t, inst, r, j, Noise(p_miss=0.3), rng)
        fixed, missed = fixed + e.fixed, missed + e.missed
        assert e.over_edits == 0
    rate = missed / (fixed + missed - 0.0)
    # several thousand Bernoulli(0.3) draws (wrong spans + append decisions): within 0.03 of 0.3
    assert abs(rate - 0.3) < 0.03, rate


def test_noise_over_edit_keeps_gold_and_rate():
    t, pool, r = _edit_pool(200)
    rng = random.Random(1)
    over = words = 0
    for inst, j in pool:
        e = annotate_edit(t, inst, r, j, Noise(p_over_edit=0.2), rng)
        over += e.over_edits
        words += sum(1 for s, e_, _ in __import__("finealign.sim.base", fromlist=["words"]).words(r)
                     if not any(a < e_ and s < b for a, b in ((m.start, m.end) for m in j.mentions)))
        assert t.judge(inst, e.edited).score == pytest.approx(1.0)  # over-edits never change the gold score
    assert 0.12 < over / words < 0.22, over / words  # 0.2 minus the draws refused for changing the score


def test_noise_flip_statistics_and_zero_noise_is_oracle():
    rng = random.Random(2)
    picks = [preference(1.0, 0.0, Noise(p_flip=0.25), rng) for _ in range(4000)]
    assert abs(sum(picks) / 4000 - 0.25) < 0.025  # flipped = picked b
    assert preference(0.5, 0.5, Noise(p_flip=1.0), rng) is None
    t, pool, r = _edit_pool(20)
    for inst, j in pool:
        assert annotate_edit(t, inst, r, j, Noise(), rng).edited == oracle_edit(r, j)
    with pytest.raises(FinealignError, match="p_miss must lie in"):
        Noise(p_miss=1.5)


def test_knobs_help_names_every_knob_with_a_default_that_parses_back():
    """The --task-options help of `sim make` and `sim study` lists each task's knobs; each shown scalar default,
    read back by ``parse_options``, is the knob's default."""
    import dataclasses

    from finealign.sim import TASKS, knobs_help, parse_options

    text = knobs_help()
    for task, (_, opts) in TASKS.items():
        part = next(p for p in text.split("; ") if p.startswith(task + ": "))
        shown = dict(kv.split("=", 1) for kv in part[len(task) + 2:].split(", "))
        assert set(shown) == {f.name for f in dataclasses.fields(opts)}
        for f in dataclasses.fields(opts):
            if isinstance(f.default, (bool, int, float)):
                assert parse_options(task, {f.name: shown[f.name]})[f.name] == f.default
