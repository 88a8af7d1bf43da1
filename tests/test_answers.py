"""Answer parsing and step checking (qcrd_plugin.answers)."""

from qcrd_plugin.answers import (
    answers_match,
    format_number,
    parse_label,
    parse_stated_answer,
    parse_steps,
    step_validity,
)


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


def test_safe_eval_does_arithmetic_and_nothing_else():
    from qcrd_plugin.answers import safe_eval

    assert safe_eval("( 84.0 / 2.0 )") == 42.0
    assert safe_eval("(10 * 45) - 3") == 447.0
    assert safe_eval("-(2 + 3) * 4") == -20.0
    for hostile in (
        "__import__('os').system('true')",
        "open('x')",
        "(1).__class__",
        "[1, 2]",
        "a + 1",
        "2 ** 10 ** 10",
    ):
        assert safe_eval(hostile) is None
    assert safe_eval("1 / 0") is None


def test_typed_answers():
    from qcrd_plugin.answers import normalize_answer, stated_answer

    choices = ["park", "coloring book", "garden center", "math problem", "gravity"]
    assert stated_answer("Only math problem fits. So the answer is (d) math problem.", "choice", choices) == "d"
    assert stated_answer("The answer is B", "choice", choices) == "b"
    assert normalize_answer("garden center", "choice", choices) == "c"
    assert stated_answer("Oxford is in London. So the answer is contradiction.", "label") == "contradiction"
    assert normalize_answer(1, "label") == "neutral"
    assert stated_answer("... therefore it is True. The answer is True", "yesno") == "yes"
    assert normalize_answer("No", "yesno") == "no"
    assert stated_answer("So they planted 10 * 45 seeds. The answer is (10 * 45).") == 450.0
    assert stated_answer("Danny has 100 - 68 = 32 more wrappers.") == 32.0  # raw sample: its last number
    assert stated_answer("Danny has 100 - 68 = 32 more wrappers.", require_phrase=True) is None
    assert stated_answer("She makes 9 * 2 = $18.\n#### 1,018") == 1018.0
