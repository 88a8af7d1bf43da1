"""Teachers: where rationales come from, behind one interface.

``SimulatedTeacher`` is a **simulated** component: it stands in for an LLM when there is no
network. It writes rationales for the synthetic task whose steps can go wrong the way an LLM's do
(arithmetic slip, wrong operation, skipped or copied step) with a probability that grows with the
temperature; the stated answer follows from the steps as written, and phrasing varies per sample.
"""

from __future__ import annotations

import random
from typing import Iterable, Protocol

from .answers import format_number, parse_stated_answer
from .config import TeacherConfig
from .pools import POOL_FORMAT, PoolEntry, TeacherSample  # noqa: F401  (re-exported)
from .synth import SYMBOL_RESULT, Problem

class Teacher(Protocol):
    """Samples K rationales per question at a temperature."""

    def sample(self, problems: Iterable[Problem], k: int, temperature: float) -> list[PoolEntry]: ...


_OPENINGS = ("{n} starts with {a} {o}.", "At first {n} has {a} {o}.", "First, {n} has {a} {o}.", "")
_STEP_FORMS = ("{a} {op} {b} = {c}.", "{clause}, so {a} {op} {b} = {c}.", "Then {a} {op} {b} = {c}.",
               "Now {n} has {a} {op} {b} = {c} {o}.")
_ENDINGS = ("The answer is {ans}.", "So the answer is {ans}.")
_ERRORS = ("slip", "wrong_op", "skip", "copy")


class SimulatedTeacher:
    """A simulated LLM teacher for the synthetic task (see module docstring)."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg

    def step_error_probability(self, temperature: float) -> float:
        """Chance that one step goes wrong at this temperature (linear in T, capped at 0.9)."""
        return min(0.9, self.cfg.step_error_rate * temperature)

    def sample(self, problems: Iterable[Problem], k: int, temperature: float) -> list[PoolEntry]:
        """K rationales per problem; deterministic for a given seed, question id and sample index."""
        entries = []
        for problem in problems:
            samples = [self._one(problem, temperature, random.Random(f"{self.cfg.seed}:{problem.id}:{i}"))
                       for i in range(k)]
            entries.append(PoolEntry(problem.id, problem.question, problem.answer, samples))
        return entries

    def _one(self, problem: Problem, temperature: float, rng: random.Random) -> TeacherSample:
        p_error = self.step_error_probability(temperature)
        fmt = dict(n=problem.name, o=problem.object)
        parts = [rng.choice(_OPENINGS).format(a=problem.start, **fmt)]
        value, errors, previous = problem.start, [], None
        for step in problem.program:
            op, operand = step.op, step.operand
            error = rng.choice(_ERRORS) if rng.random() < p_error else ""
            if error == "copy" and previous is None:
                error = "slip"  # nothing to copy before the first step
            if error == "skip":
                errors.append(error)
                continue  # the running value is carried over unchanged
            if error == "copy":
                parts.append(previous)  # the previous step written again; value unchanged
                errors.append(error)
                continue
            if error == "wrong_op":
                op = rng.choice([o for o in SYMBOL_RESULT if o != op and (o != "*" or operand <= 3)])
            result = SYMBOL_RESULT[op](value, operand)
            if error == "slip":
                result += rng.choice((-3, -2, -1, 1, 2, 3))
            if error:
                errors.append(error)
            text = rng.choice(_STEP_FORMS).format(a=value, op=op, b=operand, c=result, clause=step.clause[0].upper() + step.clause[1:], **fmt)
            parts.append(text)
            previous, value = text, result
        unparseable = rng.random() < min(0.9, self.cfg.unparseable_rate * temperature)
        if unparseable:
            errors.append("no_answer")  # the sample trails off without stating an answer
        else:
            parts.append(rng.choice(_ENDINGS).format(ans=format_number(value)))
        rationale = " ".join(p for p in parts if p)
        return TeacherSample(rationale, parse_stated_answer(rationale), "+".join(errors))


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """The teacher backend named by ``teacher.kind``."""
    if cfg.kind == "simulated":
        return SimulatedTeacher(cfg)
    raise ValueError(f"unknown teacher kind {cfg.kind!r}")
