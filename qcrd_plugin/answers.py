"""Answer and rationale parsing shared by training, self-consistency and the lm-eval tasks.

Everything that turns model or teacher text into a number lives here, so the task utilities in
``tasks/`` and the training code can never disagree about what an answer is.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

NUMBER = r"-?\d+(?:\.\d+)?"
# The last answer phrase wins because teachers sometimes restate an intermediate value as "the
# answer" before correcting it.
_FIRST_NUMBER = re.compile(NUMBER)
# One arithmetic step as written in a rationale: "a op b = c".
_STEP = re.compile(rf"({NUMBER})\s*([-+*/x×])\s*({NUMBER})\s*=\s*({NUMBER})")

_OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "x": lambda a, b: a * b,
    "×": lambda a, b: a * b,
    "/": lambda a, b: a / b if b != 0 else math.nan,
}


def parse_stated_answer(rationale: str) -> float | None:
    """The number a rationale states ("... The answer is 7."), or None if it states none (the
    synthetic task's strict reading; see :func:`stated_answer` for every answer type)."""
    value = stated_answer(rationale, "number", require_phrase=True)
    return None if value is None else float(value)


def parse_label(prediction: str) -> float | None:
    """The number a ``predict:`` generation gives (an equation is evaluated), or None."""
    value = predicted_answer(prediction, "number")
    return None if value is None else float(value)


def format_number(value: float) -> str:
    """Canonical text of a number: integers without a decimal point ("7", not "7.0"), other
    numbers in the shortest positional form that reads back as the same float ("2.5",
    "1234.5678", "0.00001"). Never ``%g``'s 6 significant digits or exponent: "1.23457e+06" would
    lose a gold answer's digits, and every reader here would take "1e-05" for 1."""
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if not math.isfinite(value):
        return f"{value:g}"
    return format(Decimal(repr(float(value))), "f")


def canonical_text(value: float | str) -> str:
    """A canonical answer as stored in question records: numbers via :func:`format_number`."""
    return format_number(value) if isinstance(value, float) else str(value)


def answers_match(predicted: float | str | None, gold: float | str | None, tol: float = 1e-6) -> bool:
    """True when both answers exist and agree: numerically when both are numbers, else as
    canonical strings (choice letters, NLI labels, yes/no)."""
    if predicted is None or gold is None:
        return False
    try:
        a, b = float(predicted), float(gold)
    except (TypeError, ValueError, OverflowError):
        a = b = math.nan
    if math.isfinite(a) and math.isfinite(b):
        return abs(a - b) <= tol
    # Not two finite numbers: a text answer "nan" or "infinity" must still equal itself.
    return str(predicted).strip().lower() == str(gold).strip().lower()


# ---- safe arithmetic (DSS's SVAMP labels are equations such as "( 84.0 / 2.0 )") -----------

_AST_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
               ast.Pow: operator.pow}
_AST_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
# No answer or label is longer; the cap also keeps Python's parser away from inputs it cannot
# handle ("-" * 100000 + "1" raises MemoryError, a long "1+1+..." RecursionError).
MAX_EXPRESSION_CHARS = 1000


def safe_eval(expression: str) -> float | None:
    """Value of an arithmetic expression (numbers, + - * / // % **, parentheses), or None.

    Parsed with :mod:`ast` and evaluated over a whitelist of node types: no names, calls or
    attributes ever reach Python's ``eval``. Huge powers, division by zero, results that are not
    finite and expressions over :data:`MAX_EXPRESSION_CHARS` give None; it never raises.
    """
    text = (expression or "").replace("×", "*").replace("x", "*").replace("^", "**").replace(",", "")
    if len(text) > MAX_EXPRESSION_CHARS:
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):  # MemoryError: the parser's own stack limit
        return None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
                raise ValueError("power too large")
            return _AST_BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _AST_UNARY:
            return _AST_UNARY[type(node.op)](value(node.operand))
        raise ValueError(f"not arithmetic: {type(node).__name__}")

    try:
        result = value(tree)
    except (ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return result if math.isfinite(result) else None


def _finite(text: str) -> float | None:
    """float(text), or None when it is not finite ("9" * 400 reads as inf)."""
    value = float(text)
    return value if math.isfinite(value) else None


# ---- typed answers: number, choice, label, yes/no, free text --------------------------------

ANSWER_TYPES = ("number", "choice", "label", "yesno", "text")
NLI_LABELS = ("entailment", "neutral", "contradiction")  # ANLI / e-SNLI ids 0, 1, 2
CHOICE_LETTERS = "abcdefghij"
# Text after the last answer phrase: "The answer is X", "So the answer is (X)", "Answer: X",
# GSM8K's "#### X". Up to the end of the line.
_ANSWER_PHRASE = re.compile(r"the answer is|answer\s*:|####", re.IGNORECASE)
_ARITHMETIC_PREFIX = re.compile(r"^[\s$]*([-+*/×().\d\s,]*\d[-+*/×().\d\s,]*)")
_YES = ("yes", "true")
_NO = ("no", "false")


def _after_answer_phrase(text: str) -> str | None:
    last = None
    for last in _ANSWER_PHRASE.finditer(text or ""):
        pass
    return None if last is None else text[last.end():].split("\n", 1)[0].strip()


def _number(text: str) -> float | None:
    """A number from the start of ``text``: an arithmetic expression if one parses, else the
    first number ("$1,200." -> 1200, "(84 / 2)." -> 42, "7 apples" -> 7)."""
    match = _ARITHMETIC_PREFIX.match(text or "")
    if match:
        candidate = match.group(1).strip().rstrip(".").strip()
        while candidate.count("(") < candidate.count(")") and candidate.endswith(")"):
            candidate = candidate[:-1]  # "7)" from "(7)." after the phrase's own "("
        while candidate.count("(") > candidate.count(")") and candidate.startswith("("):
            candidate = candidate[1:]
        value = safe_eval(candidate)
        if value is not None:
            return value
    first = _FIRST_NUMBER.search((text or "").replace(",", ""))
    return _finite(first.group(0)) if first else None


def _choice(text: str, choices: Sequence[str] | None) -> str | None:
    """A choice letter ("a".."e") from "(d) math problem", "B", "B: populated areas" or the
    choice's text."""
    text = (text or "").strip()
    letters = CHOICE_LETTERS[: len(choices)] if choices else CHOICE_LETTERS[:5]
    match = re.match(r"^\(?([a-jA-J])\)?(?:[\s.:,)]|$)", text)
    if match and match.group(1).lower() in letters:
        return match.group(1).lower()
    lowered = text.lower()
    if choices:
        # Only choices that have a letter (a task offers at most len(CHOICE_LETTERS)).
        found = [(len(c), i) for i, c in enumerate(choices[: len(letters)]) if c and c.lower() in lowered]
        if found:
            return letters[max(found)[1]]
    return None


def _nli_label(text: str) -> str | None:
    lowered = (text or "").lower()
    hits = [(lowered.find(stem), label) for stem, label in
            (("entail", "entailment"), ("neutral", "neutral"), ("contradict", "contradiction"))
            if stem in lowered]
    return min(hits)[1] if hits else None


def _yes_no(text: str) -> str | None:
    words = re.findall(r"[a-z]+", (text or "").lower())
    for word in words:
        if word in _YES:
            return "yes"
        if word in _NO:
            return "no"
    return None


def normalize_answer(text: str | float | int | bool | None, answer_type: str, choices: Sequence[str] | None = None) -> float | str | None:
    """The canonical form of an answer of ``answer_type``: a finite float for numbers, a letter
    for choices, an NLI label, "yes"/"no", or lower-cased text. None when nothing parses.
    Normalizing a canonical form gives it back (idempotent)."""
    if text is None:
        return None
    if answer_type == "number":
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            try:
                value = float(text)
            except OverflowError:  # an int beyond float range
                return None
            return value if math.isfinite(value) else None
        return _number(str(text))
    if answer_type == "choice":
        return _choice(str(text), choices)
    if answer_type == "label":
        if isinstance(text, int) and not isinstance(text, bool) and 0 <= text < len(NLI_LABELS):
            return NLI_LABELS[text]
        return _nli_label(str(text))
    if answer_type == "yesno":
        if isinstance(text, bool):
            return "yes" if text else "no"
        return _yes_no(str(text))
    if answer_type == "text":
        # Trailing dots and spaces in any order ("a. ." -> "a"), so that a second pass is a no-op.
        cleaned = re.sub(r"[\s.]+$", "", str(text).lower()).strip()
        return cleaned or None
    raise ValueError(f"unknown answer type {answer_type!r}; expected one of {', '.join(ANSWER_TYPES)}")


def stated_answer(rationale: str, answer_type: str = "number", choices: Sequence[str] | None = None,
                  require_phrase: bool = False) -> float | str | None:
    """The answer a rationale states: after its last answer phrase ("The answer is ...",
    "Answer: ...", "#### ..."). Without such a phrase, and unless ``require_phrase``, a number
    rationale's last number counts (raw LLM samples such as MCC-KD's end on "... = 32 more
    wrappers"); other types fall back to the rationale's last sentence."""
    tail = _after_answer_phrase(rationale)
    if tail is not None:
        return normalize_answer(tail, answer_type, choices)
    if require_phrase or not (rationale or "").strip():
        return None
    if answer_type == "number":
        numbers = _FIRST_NUMBER.findall((rationale or "").replace(",", ""))
        return _finite(numbers[-1]) if numbers else None
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", rationale.strip()) if s]
    return normalize_answer(sentences[-1], answer_type, choices) if sentences else None


def predicted_answer(generation: str, answer_type: str = "number", choices: Sequence[str] | None = None) -> float | str | None:
    """The answer a ``predict:`` generation gives (a whole answer phrase is accepted too)."""
    tail = _after_answer_phrase(generation)
    return normalize_answer(generation if tail is None else tail, answer_type, choices)


@dataclass(frozen=True)
class WrittenStep:
    """One ``a op b = c`` step as written in a rationale."""

    a: float
    op: str
    b: float
    c: float

    @property
    def is_valid(self) -> bool:
        """True when the stated result is arithmetically right."""
        value = _OPS[self.op](self.a, self.b)
        return math.isfinite(value) and abs(value - self.c) <= 1e-6


def parse_steps(rationale: str) -> list[WrittenStep]:
    """All ``a op b = c`` steps of a rationale, in order."""
    return [
        WrittenStep(float(a), op, float(b), float(c))
        for a, op, b, c in _STEP.findall(rationale or "")
    ]


def step_validity(rationale: str) -> float | None:
    """Fraction of written steps that are arithmetically right; None if there are no steps."""
    steps = parse_steps(rationale)
    if not steps:
        return None
    return sum(step.is_valid for step in steps) / len(steps)
