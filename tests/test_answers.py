"""Answer parsing and step checking (qcrd_plugin.answers)."""

from qcrd_plugin.answers import answers_match, format_number, parse_label, parse_stated_answer, parse_steps, step_validity


def test_stated_answer_takes_the_last_answer_phrase():
    assert parse_stated_answer("3 + 4 = 7. The answer is 7.") == 7.0
    assert parse_stated_answer("So the answer is (12).") == 12.0
    assert parse_stated_answer("The answer is 5. No wait, the answer is 6.") == 6.0
    assert parse_stated_answer("Answer: -3") == -3.0


def test_no_answer_phrase_is_unparseable():
    assert parse_stated_answer("3 + 4 = 7.") is None
    assert parse_stated_answer("") is None


def test_label_is_the_first_number():
    assert parse_label("12") == 12.0
    assert parse_label(" 7 apples") == 7.0
    assert parse_label("2.5") == 2.5
    assert parse_label("none") is None


def test_steps_and_validity():
    text = "Tom has 3. 3 + 4 = 7. 7 - 2 = 6. 6 * 2 = 12. The answer is 12."
    steps = parse_steps(text)
    assert [(s.a, s.op, s.b, s.c) for s in steps] == [(3, "+", 4, 7), (7, "-", 2, 6), (6, "*", 2, 12)]
    assert [s.is_valid for s in steps] == [True, False, True]
    assert step_validity(text) == 2 / 3
    assert step_validity("no steps here") is None


def test_numbers_match_and_format():
    assert answers_match(7.0, "7")
    assert not answers_match(None, "7")
    assert not answers_match(6.0, "7")
    assert format_number(7.0) == "7" and format_number(2.5) == "2.5"
