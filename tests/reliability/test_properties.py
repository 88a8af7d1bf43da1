"""Property-based tests (hypothesis) of the answer readers and the safe arithmetic evaluator in
``qcrd_plugin.answers``: whatever text a model, a teacher or a data file produces, they never
raise, never execute anything, and their canonical forms read back as themselves."""

from __future__ import annotations

import builtins
import math
from fractions import Fraction

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from qcrd_plugin.answers import (
    ANSWER_TYPES,
    CHOICE_LETTERS,
    MAX_EXPRESSION_CHARS,
    NLI_LABELS,
    answers_match,
    canonical_text,
    format_number,
    normalize_answer,
    parse_steps,
    predicted_answer,
    safe_eval,
    stated_answer,
    step_validity,
)

PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that looks like arithmetic (the evaluator's own alphabet, plus its rewrites x × ^ ,).
ARITHMETIC_CHARS = "0123456789+-*/().x×^%, eE_j"
any_text = st.text(max_size=80)
arithmetic_text = st.text(alphabet=ARITHMETIC_CHARS, max_size=60)
choices_lists = st.none() | st.lists(st.text(max_size=12), max_size=12)
answer_types = st.sampled_from(ANSWER_TYPES)
raw_answers = (
    any_text
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.none()
    | st.integers(min_value=10**300, max_value=10**400)
)


def is_canonical(value, answer_type: str, choices) -> bool:
    """What :func:`normalize_answer` promises to return for ``answer_type``."""
    if value is None:
        return True
    if answer_type == "number":
        return type(value) is float and math.isfinite(value)
    if answer_type == "choice":
        letters = CHOICE_LETTERS[: len(choices)] if choices else CHOICE_LETTERS
        return isinstance(value, str) and len(value) == 1 and value in letters
    if answer_type == "label":
        return value in NLI_LABELS
    if answer_type == "yesno":
        return value in ("yes", "no")
    return isinstance(value, str) and value != "" and value == value.strip()


# ---- safe_eval ------------------------------------------------------------------------------


@PROPERTY
@given(any_text | arithmetic_text)
@example("-" * 100000 + "1")  # Python's parser: MemoryError
@example("+".join(["1"] * 100000))  # Python's parser: RecursionError
@example("-" * 900 + "1")  # deep but short: our evaluator's recursion
@example("1" + "0" * 5000)  # an int literal over Python's 4300-digit limit
@example("9" * 400)  # overflows a float
@example("10 ** 64 ** 64")
@example("(" * 300 + "1" + ")" * 300)
@example("1e308 * 10")
def test_safe_eval_never_raises_and_gives_none_or_a_finite_float(text):
    value = safe_eval(text)
    assert value is None or (type(value) is float and math.isfinite(value))
    if len(text) > MAX_EXPRESSION_CHARS:
        assert value is None


HOSTILE = [
    "a",
    "os",
    "print",
    "open('f')",
    "__import__('os')",
    "os.system('true')",
    "(1).real",
    "[1][0]",
    "{1: 2}[1]",
    "lambda: 1",
    "'7'",
    "b'7'",
    "True",
    "None",
    "...",
    "1 if 1 else 2",
    "(y := 3)",
    "f'{1}'",
    "[1, 2]",
    "{1}",
    "1 < 2",
    "not 1",
    "~1",
    "1 and 2",
    "qcrd_probe()",
    "globals()",
    "().__class__",
    "1j",
]


@st.composite
def expressions(draw, depth: int = 3):
    """(text, float value or None on a division by zero, exact value) of + - * / over small ints."""
    if depth == 0 or draw(st.booleans()):
        n = draw(st.integers(min_value=0, max_value=20))
        return str(n), float(n), Fraction(n)
    op = draw(st.sampled_from("+-*/"))
    lt, lv, lx = draw(expressions(depth - 1))
    rt, rv, rx = draw(expressions(depth - 1))
    if " " in lt or draw(st.booleans()):
        lt = f"({lt})"  # a compound operand is one sub-tree; a number may carry redundant parentheses
    if " " in rt or draw(st.booleans()):
        rt = f"({rt})"
    text = f"{lt} {op} {rt}"
    if lv is None or rv is None or (op == "/" and rv == 0):
        return text, None, None
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else None}[op]
    exact = {"+": lx + rx, "-": lx - rx, "*": lx * rx, "/": lx / rx if rx else None}[op]
    return text, value, exact


@PROPERTY
@given(expressions())
def test_safe_eval_agrees_with_python_arithmetic(case):
    text, value, exact = case
    result = safe_eval(text)
    if value is None:
        assert result is None  # a division by zero anywhere
        return
    assert result == value  # the same IEEE operations in the same order
    if "/" not in text:
        assert result == float(exact)  # integers stay exact far below 2**53
    else:
        assert math.isclose(result, float(exact), rel_tol=1e-9, abs_tol=1e-6)
    # The spellings rationales use read the same: ×, x, no spaces, a leading minus.
    assert safe_eval(text.replace("*", "×")) == result
    assert safe_eval(text.replace("*", "x")) == result
    assert safe_eval(text.replace(" ", "")) == result
    assert safe_eval(f"-({text})") == -result


@PROPERTY
@given(expressions(), st.sampled_from(HOSTILE), st.integers(min_value=0, max_value=200))
def test_safe_eval_never_runs_names_calls_or_attributes(case, hostile, where):
    """Any name, call, attribute, subscript, string or comparison anywhere makes the whole
    expression None; a probe function planted in builtins is never called."""
    text = case[0]
    cut = where % (len(text) + 1)
    calls = []
    builtins.qcrd_probe = lambda: calls.append(1) or 1
    try:
        for candidate in (
            f"{text} + {hostile}",
            f"{hostile} * ({text})",
            f"{text[:cut]} + ({hostile}) + 0 * {text[cut:] or '1'}",
        ):
            assert safe_eval(candidate) is None, candidate
    finally:
        del builtins.qcrd_probe
    assert not calls


# ---- normalize_answer -------------------------------------------------------------------------


@PROPERTY
@given(raw_answers, answer_types, choices_lists)
@example("a. .", "text", None)  # trailing dots and spaces in any order
@example(float("nan"), "number", None)
@example(10**400, "number", None)
@example("eleven", "choice", [str(i) for i in range(10)] + ["eleven"])  # a choice beyond the last letter
def test_normalize_answer_is_canonical_and_idempotent(raw, answer_type, choices):
    value = normalize_answer(raw, answer_type, choices)
    assert is_canonical(value, answer_type, choices), value
    if value is not None:
        assert normalize_answer(value, answer_type, choices) == value
        # Its canonical text (what question files and pools store) reads back as the same answer.
        assert normalize_answer(canonical_text(value), answer_type, choices) == value
        assert answers_match(value, canonical_text(value))


# ---- stated_answer / predicted_answer on arbitrary text ---------------------------------------


@PROPERTY
@given(any_text, answer_types, choices_lists, st.booleans())
@example("The answer is " + "9" * 400, "number", None, False)
@example("Tom had " + "9" * 400 + " apples", "number", None, False)
@example("The answer is (" * 50, "number", None, True)
@example("(:)", "text", None, False)  # found by hypothesis in CI: brackets around punctuation alone
@example("So we get: [(abc)]", "text", None, False)
def test_stated_and_predicted_answers_never_raise_and_round_trip(text, answer_type, choices, require_phrase):
    for value in (
        stated_answer(text, answer_type, choices, require_phrase=require_phrase),
        predicted_answer(text, answer_type, choices),
    ):
        assert is_canonical(value, answer_type, choices), value
        if value is not None:
            assert normalize_answer(canonical_text(value), answer_type, choices) == value
    if require_phrase and "answer" not in text.lower() and "####" not in text:
        assert stated_answer(text, answer_type, choices, require_phrase=True) is None


@PROPERTY
@given(
    st.text(alphabet="0123456789 .,+-*/()$", max_size=40),
    st.sampled_from(["The answer is ", "So the answer is ", "Answer: ", "#### "]),
)
def test_number_readers_on_number_like_text(tail, phrase):
    value = stated_answer(f"Some steps. 3 + 4 = 7. {phrase}{tail}")
    assert value is None or (type(value) is float and math.isfinite(value))
    assert predicted_answer(tail) is None or math.isfinite(predicted_answer(tail))


finite_floats = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**12), 10**12).map(float)
    | st.decimals(min_value=-(10**6), max_value=10**6, places=4, allow_nan=False).map(float)
)


@PROPERTY
@given(
    finite_floats,
    st.sampled_from(["The answer is {}.", "So the answer is {}", "Answer: {}", "#### {}", "The answer is ({})."]),
)
@example(1e-05, "The answer is {}.")  # %g would write "1e-05", read back as 1
@example(1234567.5, "The answer is {}.")  # %g would write "1.23457e+06"
@example(1234.5678, "Answer: {}")  # %g would keep 6 digits: "1234.57"
@example(5e-324, "#### {}")
@example(-0.0, "#### {}")
def test_numbers_round_trip_through_their_canonical_text(x, template):
    text = format_number(x)
    assert float(text) == x  # nothing is lost in question files and pools
    assert "e" not in text.lower() or not math.isfinite(x)
    assert normalize_answer(text, "number") == x
    assert predicted_answer(text) == x
    assert stated_answer("Tom has 3 apples and 4 pears. " + template.format(text)) == x
    assert answers_match(x, text) and answers_match(text, x)


words = (
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=2, max_size=15)
    .map(str.strip)
    .filter(lambda w: len(w) >= 2 and " " not in w[:2])
)


@PROPERTY
@given(st.lists(words, min_size=2, max_size=len(CHOICE_LETTERS), unique_by=str.lower), st.data())
def test_choices_round_trip(choices, data):
    i = data.draw(st.integers(0, len(choices) - 1))
    letter = CHOICE_LETTERS[i]
    assert normalize_answer(letter, "choice", choices) == letter
    assert normalize_answer(letter.upper(), "choice", choices) == letter
    assert predicted_answer(f"({letter}) {choices[i]}", "choice", choices) == letter
    assert stated_answer(f"It fits best. So the answer is ({letter}) {choices[i]}.", "choice", choices) == letter
    assert normalize_answer(choices[i], "choice", choices) == letter  # the choice's own text
    beyond = CHOICE_LETTERS[len(choices)] if len(choices) < len(CHOICE_LETTERS) else None
    if beyond:  # a letter past the last choice is no answer
        assert (
            normalize_answer(f"({beyond})", "choice", choices) is None
            or normalize_answer(f"({beyond})", "choice", choices) != beyond
        )


@PROPERTY
@given(
    st.sampled_from(NLI_LABELS + ("yes", "no")),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,", max_size=40),
    st.sampled_from(["{}", "{}.", " {} ", "{}!", "{}".upper()]),
)
def test_labels_and_yes_no_round_trip(word, prefix, form):
    answer_type = "label" if word in NLI_LABELS else "yesno"
    spelled = form.format(word)
    assert normalize_answer(spelled, answer_type) == word
    assert normalize_answer(spelled.upper(), answer_type) == word
    assert stated_answer(f"{prefix}. So the answer is {spelled}", answer_type) == word
    assert predicted_answer(spelled, answer_type) == word


def test_label_ids_and_booleans():
    assert [normalize_answer(i, "label") for i in range(3)] == list(NLI_LABELS)
    assert normalize_answer(3, "label") is None and normalize_answer(-1, "label") is None
    assert normalize_answer(True, "yesno") == "yes" and normalize_answer(False, "yesno") == "no"
    assert normalize_answer(True, "number") is None or normalize_answer(True, "number") is not True


# ---- answers_match and the step checker ---------------------------------------------------------


@PROPERTY
@given(raw_answers, raw_answers)
@example("nan", "nan")  # a text answer "nan" is itself
@example(10**400, "1")
def test_answers_match_never_raises_and_is_symmetric(a, b):
    assert answers_match(a, b) == answers_match(b, a)
    if a is not None:
        assert answers_match(a, a)


@PROPERTY
@given(any_text | st.text(alphabet="0123456789 +-*/x×=.", max_size=80))
@example("9" * 400 + " + 1 = " + "9" * 400)
@example("1 / 0 = 0")
def test_step_checker_never_raises(text):
    validity = step_validity(text)
    assert validity is None or 0.0 <= validity <= 1.0
    assert (validity is None) == (not parse_steps(text))


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 999), st.sampled_from("+-*"), st.integers(0, 999), st.booleans()),
        min_size=1,
        max_size=6,
    )
)
def test_step_checker_counts_right_and_wrong_steps(steps):
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    text = " ".join(f"Then {a} {op} {b} = {ops[op](a, b) + (0 if right else 1)}." for a, op, b, right in steps)
    assume("--" not in text)
    assert [s.is_valid for s in parse_steps(text)] == [right for *_, right in steps]
    assert step_validity(text) == sum(right for *_, right in steps) / len(steps)
