"""Answer and rationale parsing shared by training, self-consistency and the lm-eval tasks.

Everything that turns model or teacher text into a number lives here, so the task utilities in
``tasks/`` and the training code can never disagree about what an answer is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

NUMBER = r"-?\d+(?:\.\d+)?"
# "The answer is 5", "So the answer is (5)", "Answer: 5"; the last such phrase wins because
# teachers sometimes restate an intermediate value as "the answer" before correcting it.
_STATED_ANSWER = re.compile(rf"(?:the answer is|answer\s*:)\s*\(?\s*({NUMBER})", re.IGNORECASE)
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
    """The answer a rationale states ("... The answer is 7."), or None if it states none."""
    matches = _STATED_ANSWER.findall(rationale or "")
    return float(matches[-1]) if matches else None


def parse_label(prediction: str) -> float | None:
    """The label a ``predict:`` generation gives: its first number, or None."""
    match = _FIRST_NUMBER.search(prediction or "")
    return float(match.group(0)) if match else None


def format_number(value: float) -> str:
    """Canonical text of a number: integers without a decimal point ("7", not "7.0")."""
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def answers_match(predicted: float | None, gold: float | str | None, tol: float = 1e-6) -> bool:
    """True when both answers exist and agree numerically."""
    if predicted is None or gold is None:
        return False
    return abs(float(predicted) - float(gold)) <= tol


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
