"""The answer readers against what people read (issue 14): real teacher outputs from every source
and answer type under the shared data, each labelled by hand with the answer it states.

``fixtures/answer_labels.jsonl`` (344 samples) is the fixture the rules were developed against;
``fixtures/answer_labels_heldout.jsonl`` (120 more, drawn and labelled afterwards) says how well
they carry over. Issue 25 extends them: ``answer_labels_text.jsonl`` (131 free-text chains) and
``answer_labels_numbers2.jsonl`` (158 number chains: fractions, number words, cut-off chains,
public zero-shot-CoT and Plan-and-Solve logs); ``answer_labels_numbers2b.jsonl`` (80, the first
draw's held-out third), ``numbers3`` (120), ``numbers4`` and ``numbers5`` (150 each), later
draws, and ``numbers6`` to ``numbers14`` (150 each), each opened for rules after it was measured once;
``answer_labels_mcc_kd_pool.jsonl`` (121 MCC-KD chains the readers disagree on). The held-out parts:
``answer_labels_text_heldout.jsonl``, ``answer_labels_numbers15_heldout.jsonl`` (150, the last draw,
labelled by reading after the rules were frozen), ``answer_labels_mcc_kd_random_heldout.jsonl`` (150
MCC-KD chains drawn at random) and ``answer_labels_smollm2_heldout.jsonl`` (100 real SmolLM2 replies).
``fixtures/draw_answer_candidates.py`` drew the first samples; docs/data.md gives the figures and
the confusions. A label of null means the text states no answer (it declines, hedges, or only
implies a yes/no).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from qcrd_plugin.answers import answers_match, normalize_answer, stated_answer

FIXTURES = Path(__file__).parent / "fixtures"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def agreement(rows: list[dict], finish_reasons: bool = True) -> dict[str, tuple[int, int]]:
    """(agreeing, total) per answer type: the parser's answer equals the hand label (both None counts).
    A row whose teacher stopped at its token limit (``finish_reason``, SmolLM2's rows) is read as a
    pool sample is: only for an answer it states explicitly (unless ``finish_reasons`` is False)."""
    counts: dict[str, Counter] = {}
    for row in rows:
        why = row.get("finish_reason", "") if finish_reasons else ""
        got = stated_answer(
            row["rationale"], row["answer_type"], row["choices"], question=row["question"], finish_reason=why
        )
        want = None if row["label"] is None else normalize_answer(row["label"], row["answer_type"], row["choices"])
        ok = got is None and want is None or want is not None and answers_match(got, want)
        counts.setdefault(row["answer_type"], Counter())[ok] += 1
    return {kind: (c[True], c[True] + c[False]) for kind, c in counts.items()}


def test_fixture_covers_every_source_and_answer_type():
    rows = _rows("answer_labels.jsonl")
    assert len(rows) >= 300 and len({r["id"] for r in rows}) == len(rows)
    assert {r["source"] for r in rows} == {"dsbs", "mcc_kd", "mentor_kd", "eit", "gsm8k"}
    assert {r["answer_type"] for r in rows} == {"number", "choice", "label", "yesno"}
    assert {"restated", "letter_and_text", "hedge", "unanswered", "implied"} <= {r["kind"] for r in rows}


def test_agreement_with_hand_labels_is_at_least_98_percent_per_answer_type():
    for kind, (ok, total) in agreement(_rows("answer_labels.jsonl")).items():
        assert ok / total >= 0.98, f"{kind}: {ok}/{total}"


def test_heldout_agreement_stays_at_its_measured_level():
    # Measured once, after the rules were fixed (docs/data.md): numbers 75/80 (76/80 in issue 25's
    # first rounds), choices 20/20, yes/no 20/20. A reader change that loses any of them fails here.
    # Numbers are 74/80 since issue 25's asked-quantity rule: two chains state the asked count and
    # then conclude with a total of everything ("Jerry had 4 + 6 = 10 action figures on the shelf.
    # So overall, he had 22 + 10 = 32 things"), which this fixture labels with the last total and
    # issue 25's convention (and the reader) with the asked count; see the next test. 75/80 since its
    # fourth round (a count stated three sentences before a closing one about buses).
    measured = {"number": 75, "choice": 20, "yesno": 20}
    for kind, (ok, total) in agreement(_rows("answer_labels_heldout.jsonl")).items():
        assert ok >= measured[kind], f"{kind}: {ok}/{total}"


def test_the_two_heldout_chains_labelled_by_the_older_convention():
    rows = {r["id"]: r for r in _rows("answer_labels_heldout.jsonl")}
    for key, asked_count, label in (("mcc_kd-svamp-any-mcc_kd-svamp-train-388-9", 10.0, "32"),
                                    ("mentor_kd-svamp-any-mentor_kd-svamp-train-432-2", 9.0, "22")):  # fmt: skip
        row = rows[key]
        assert row["label"] == label and float(row["gold"]) == asked_count
        assert stated_answer(row["rationale"], "number", question=row["question"]) == asked_count


def test_numbers_the_question_gave_are_not_answers():
    question = "Debby bought 12 water bottles. She drinks 6 a day. How many days would they last?"
    assert stated_answer("Debby's 12 water bottles would last her for 2 days.", "number", question=question) == 2.0
    assert (
        stated_answer("Debby's 12 water bottles would last her for 2 days.", "number") == 12.0
    )  # without the question


@pytest.mark.parametrize(
    "text, answer_type, choices, expected",
    [
        # the phrasings the issue found misread
        ("Let's see. So, the correct answer is (F).", "choice", None, "f"),
        ("**(A) Lolita**", "choice", ["Lolita", "Dune"], "a"),
        ("the correct answer is (D) 12/31/2014.", "choice", ["12/31/2014", "1/1/2015", "2/2/2014", "3/3/2013"], "d"),
        ('…concatenating the last letters: yeha\n\nso, the final result is "yeha"', "text", None, "yeha"),
        ("a total of 50 candies (15 chewing gums and 35 lollipops).", "number", None, 50.0),
        ("So Dave made 48 dollars in those 2 days", "number", None, 48.0),
        ("The answer is 42.\nTo check our answer: 40 + 2 = 42, and 7 - 5 = 2.", "number", None, 42.0),
        ("Therefore the final answer is $\\boxed{\\frac{3}{4}}$.", "number", None, 0.75),
        ("#### 1,200", "number", None, 1200.0),
        ("The answer is (some - 563 - 558).", "number", None, None),
        ("Therefore, the problem has no solution.", "number", None, None),
        ("So the answer is no, he could not.", "yesno", None, "no"),
        ("It is likely that she was influenced by Heap's music.", "yesno", None, None),
    ],
)
def test_issue_phrasings(text, answer_type, choices, expected):
    assert stated_answer(text, answer_type, choices) == expected


def test_issue25_fixtures_cover_free_text_and_the_new_number_phrasings():
    text, numbers = _rows("answer_labels_text.jsonl"), _rows("answer_labels_numbers2.jsonl")
    assert len(text) + len(_rows("answer_labels_text_heldout.jsonl")) >= 150
    assert len(numbers) + len(_rows("answer_labels_numbers2b.jsonl")) >= 150
    assert len(_rows("answer_labels_numbers3.jsonl")) == 120
    assert all(
        len(_rows(f"answer_labels_numbers{n}.jsonl")) == 150
        for n in ("4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15_heldout")
    )
    assert {r["answer_type"] for r in text} == {"text"} and {r["answer_type"] for r in numbers} == {"number"}
    assert {"we_get", "after_colon", "answer_colon", "spaced", "bare", "none"} <= {r["kind"] for r in text}
    assert {"fraction", "word_number", "restated_after", "none"} <= {r["kind"] for r in numbers}
    old = {r["id"] for name in ("answer_labels.jsonl", "answer_labels_heldout.jsonl") for r in _rows(name)}
    assert not old & {r["id"] for r in text + numbers}
    # The later draws share no chain with each other or with anything labelled before them.
    draws = tuple(
        f"answer_labels_numbers{n}.jsonl"
        for n in ("3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15_heldout", "_random_heldout")
    )
    later = [r["id"] for name in draws for r in _rows(name)]
    earlier = {
        r["id"] for path in FIXTURES.glob("answer_labels*.jsonl") if path.name not in draws for r in _rows(path.name)
    }
    assert len(set(later)) == len(later) and not set(later) & earlier


def test_issue25_fixture_agreement_per_answer_type():
    # Free text: the issue's >= 0.95. Numbers, measured after the rules were fixed (docs/data.md):
    # 157/158 on the first draw, 75/80 on its third held out until 2026-12-07 (68/80 then), 115/120
    # on the second draw (110/120 when it was held out), 146/150 on the third (143/150 then), 138/150 on
    # the fourth (137/150 then), 139/150 on the fifth (held out until 2026-12-07's second session),
    # 65/121 on MCC-KD pool chains that the readers of 3212336 and 6ec2b6c read differently (the hard
    # ones by construction), 142/150 on the sixth (numbers7, held out until the third round). Since the
    # second and third rounds: 77, 117, 148, 142, 147, 148 and 70 (73 since the review fixes). The fourth
    # round: numbers5 143; numbers8 (held out until then) 143, numbers9 (its fresh draw, 141 measured once
    # with e19e52e's reader) 146. The fifth: numbers5 144, numbers10 (held out in the fourth, 142) 144.
    # The sixth: numbers11 (held out in the fifth, 141) 145. The seventh: numbers12 (held out in the sixth, 142) 144.
    # The eighth (fourth session of 2026-12-07): numbers13 (held out in the seventh, 139) 145; mcc_kd_pool 74.
    # numbers14 (held out in the eighth, 138): opened in the fifth session for a ninth round, which was dropped.
    ((text_ok, text_total),) = agreement(_rows("answer_labels_text.jsonl")).values()
    names = ("numbers2", "numbers2b", "numbers3", "numbers4", "numbers5", "numbers6", "numbers7", "numbers8")
    names += ("numbers9", "numbers10", "numbers11", "numbers12", "numbers13", "numbers14", "mcc_kd_pool")
    counts = [agreement(_rows(f"answer_labels_{name}.jsonl"))["number"][0] for name in names]
    assert text_ok / text_total >= 0.95, f"text {text_ok}/{text_total}"
    measured = [155, 77, 117, 148, 144, 147, 148, 143, 146, 144, 145, 144, 145, 138, 74]
    assert all(c >= m for c, m in zip(counts, measured)), dict(zip(names, counts))


def test_issue25_heldout_agreement_stays_at_its_measured_level():
    # Measured once, never tuned on (docs/data.md): free text 63/66 (0.955, the issue's target is
    # 0.95); numbers 140/150 (0.933) on the last draw (numbers15), labelled by two readers (who agree on
    # 150/150) while a ninth round's rules were written and read after they were frozen; the eighth round's
    # reader, kept when the ninth was dropped, reads all 150 chains alike: 140. Short of the issue's 0.97.
    ((text_ok, _),) = agreement(_rows("answer_labels_text_heldout.jsonl")).values()
    ((number_ok, _),) = agreement(_rows("answer_labels_numbers15_heldout.jsonl")).values()
    assert text_ok >= 63 and number_ok >= 140, (text_ok, number_ok)


def test_smollm2_chains_agreement_stays_at_its_measured_level():
    # Real SmolLM2-135M-Instruct replies (tests/fixtures/smollm2_chains.py), never tuned on
    # (docs/data.md): numbers 40/50 (41/50 since the third round's open-sum cut-off), free text 34/50
    # (36/50 since the tiny-teacher rules, written on a development draw). A second draw, labelled
    # after those rules were frozen and measured once: numbers 46/50, free text 30/50 (29 before).
    # Read as pool samples are, knowing which chains stopped at the 192-token limit (the fourth
    # session of 2026-12-07; a rule fixed before these files were read with it): 44 and 37, 47 and 32.
    found = agreement(_rows("answer_labels_smollm2_heldout.jsonl"))
    assert found["number"][0] >= 44 and found["text"][0] >= 37, found
    fresh = agreement(_rows("answer_labels_smollm2_fresh_heldout.jsonl"))
    assert fresh["number"][0] >= 47 and fresh["text"][0] >= 32, fresh
    dev = agreement(_rows("answer_labels_smollm2_dev.jsonl"))  # development: 43/50 (45 since the fifth round), 41/50
    assert dev["number"][0] >= 48 and dev["text"][0] >= 42, dev


def test_a_third_smollm2_draw_agrees_at_its_measured_level():
    # `smollm2_chains.py i25/smollm2-fresh2` (94 chains, 6 repeating a labelled text left out),
    # labelled by two readers (tests/fixtures/second_labels_smollm2_fresh2.jsonl) after the
    # restated-answer and echo rules were frozen, measured once: free text 35/44 (the reader before
    # them 32/44), numbers 44/50 (unchanged); the two labellers agree on 44/44 and 48/50.
    rows = _rows("answer_labels_smollm2_fresh2_heldout.jsonl")
    earlier = {
        row["rationale"]
        for f in ("dev", "heldout", "fresh_heldout")
        for row in _rows(f"answer_labels_smollm2_{f}.jsonl")
    }
    assert len(rows) == 94 and not earlier & {row["rationale"] for row in rows}
    found = agreement(rows)
    assert found["text"] == (35, 44) or found["text"][0] > 35, found
    assert found["number"][0] >= 44 and found["number"][1] == 50, found


def test_a_smollm2_chain_stopped_at_its_token_limit_gives_only_an_explicit_answer():
    """The rows SmolLM2 stopped at max_tokens (``finish_reason: "length"``, recorded by
    smollm2_chains.py as a teacher pool records it): their closing quantity is wherever the limit
    fell ("... which is 18 x 3 = 48 cookies", labelled null). Knowing the reason gains on every
    draw and loses no row."""
    for name in ("smollm2_dev", "smollm2_heldout", "smollm2_fresh_heldout"):
        rows = _rows(f"answer_labels_{name}.jsonl")
        assert {row["finish_reason"] for row in rows} == {"stop", "length"}
        before, after = agreement(rows, finish_reasons=False), agreement(rows)
        for kind in ("number", "text"):
            assert after[kind][0] >= before[kind][0], (name, kind)
        assert sum(after[k][0] - before[k][0] for k in after) >= 2, name
        cut = [row for row in rows if row["finish_reason"] == "length"]
        assert agreement(cut)["number"][0] > agreement(cut, finish_reasons=False)["number"][0], name


def test_a_random_draw_of_mcc_kd_chains_agrees_at_its_measured_level():
    # 150 MCC-KD SVAMP chains drawn at random, labelled after the rules were frozen, measured once
    # (docs/data.md): 143/150, as last session's reader; the reader before issue 25 had 142/150. 145/150
    # since the fixes of a code review of the asked-quantity rules (two of its chains now read as labelled).
    ((number_ok, total),) = agreement(_rows("answer_labels_mcc_kd_random_heldout.jsonl")).values()
    assert total == 150 and number_ok >= 145, number_ok


def test_a_random_draw_of_public_number_chains_agrees_at_its_measured_level():
    # 150 zero-shot-CoT, Plan-and-Solve and EIT chains drawn at random (no hard half), labelled after the
    # reader was frozen, measured once (docs/data.md): 142/150; f2e307a's reader 141, the last number 130.
    # 144/150 since the fourth round and 145 since the fifth, whose rules were written after its misses
    # had been read: 142 stays its clean held-out figure.
    rows = _rows("answer_labels_numbers_random_heldout.jsonl")
    assert {r["source"] for r in rows} == {"zero_shot_cot", "plan_and_solve", "eit"}
    ((number_ok, total),) = agreement(rows).values()
    assert total == 150 and number_ok >= 145, number_ok
