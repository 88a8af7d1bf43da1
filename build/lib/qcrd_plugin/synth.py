"""The embedded synthetic task: multi-step arithmetic word problems generated from a seed.

Each problem carries its gold answer and gold step program, so rationales can be checked step by
step. Values stay in ``[0, max_value]`` so a tiny student can learn the task on a CPU in minutes.
Same seed and sizes -> the same problems, in training and in the ``qcrd_synth`` lm-eval tasks.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from .config import SynthTaskConfig
from .errors import UserInputError
from .questions import Question

NAMES = ("Tom", "Ana", "Ben", "Mia", "Sam", "Lea", "Max", "Ivy", "Leo", "Zoe", "Raj", "Eva")
OBJECTS = ("apples", "pens", "coins", "books", "cards", "shells", "stickers", "marbles", "stamps", "cookies")
# Question clause templates per operation; {n} name, {b} operand, {o} object.
CLAUSES = {
    "+": ("{n} buys {b} more {o}", "{n} finds {b} more {o}", "a friend gives {n} {b} {o}"),
    "-": ("{n} gives away {b} {o}", "{n} loses {b} {o}", "{n} sells {b} {o}"),
    "*": ("{n} ends up with {b} times as many {o}",),
}
SYMBOL_RESULT = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class ProgramStep:
    """One gold step: apply ``op`` with ``operand`` to the running value."""

    op: str
    operand: int
    clause: str


@dataclass(frozen=True)
class Problem:
    """One word problem with its gold answer, gold program and a gold rationale."""

    id: str
    question: str
    answer: str
    name: str
    object: str
    start: int
    program: tuple[ProgramStep, ...]

    def values(self) -> list[int]:
        """The running value after each gold step, starting with the start value."""
        values = [self.start]
        for step in self.program:
            values.append(SYMBOL_RESULT[step.op](values[-1], step.operand))
        return values

    @property
    def gold_rationale(self) -> str:
        """The correct rationale in the canonical phrasing."""
        values = self.values()
        parts = [f"{self.name} starts with {self.start} {self.object}."]
        for step, a, c in zip(self.program, values, values[1:]):
            parts.append(f"{a} {step.op} {step.operand} = {c}.")
        parts.append(f"The answer is {self.answer}.")
        return " ".join(parts)

    def to_record(self) -> dict:
        """A JSON-ready dict (the lm-eval doc and the canonical JSONL record)."""
        record = asdict(self)
        record["program"] = [asdict(step) for step in self.program]
        record["gold_rationale"] = self.gold_rationale
        return record

    def to_question(self) -> Question:
        """The problem as a generic question; the synthetic task demands a stated answer."""
        return Question(
            self.id, self.question, self.answer, "number", None, self.gold_rationale, require_answer_phrase=True
        )

    @classmethod
    def from_record(cls, record: dict) -> "Problem":
        """Inverse of :meth:`to_record`."""
        program = tuple(ProgramStep(s["op"], int(s["operand"]), s["clause"]) for s in record["program"])
        return cls(
            record["id"],
            record["question"],
            str(record["answer"]),
            record["name"],
            record["object"],
            int(record["start"]),
            program,
        )


def _feasible_ops(value: int, max_value: int) -> list[tuple[str, int]]:
    """Every (op, operand) that keeps the running value within [0, max_value]."""
    options = [("+", b) for b in range(1, max_value - value + 1)]
    options += [("-", b) for b in range(1, value)]  # leave at least 1: fewer trivial zeros
    options += [("*", b) for b in (2, 3) if value >= 1 and value * b <= max_value]
    return options


def make_problem(rng: random.Random, uid: str, cfg: SynthTaskConfig) -> Problem:
    """Draw one problem; operations are picked uniformly, then an operand that keeps values in range."""
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    start = rng.randint(1, cfg.max_value)
    value, program = start, []
    for _ in range(rng.randint(cfg.min_steps, cfg.max_steps)):
        options = _feasible_ops(value, cfg.max_value)
        op = rng.choice(sorted({o for o, _ in options}))
        operand = rng.choice([b for o, b in options if o == op])
        clause = rng.choice(CLAUSES[op]).format(n=name, b=operand, o=obj)
        program.append(ProgramStep(op, operand, clause))
        value = SYMBOL_RESULT[op](value, operand)
    sentences = [f"{name} has {start} {obj}."] + [c[0].upper() + c[1:] + "." for c in (s.clause for s in program)]
    question = " ".join(sentences) + f" How many {obj} does {name} have now?"
    return Problem(uid, question, str(value), name, obj, start, tuple(program))


SPLITS = ("train", "validation", "test")


def generate(cfg: SynthTaskConfig) -> dict[str, list[Problem]]:
    """All three splits. Questions never repeat across splits, so test stays unseen."""
    rng = random.Random(f"qcrd-synth:{cfg.seed}")
    sizes = {"train": cfg.n_train, "validation": cfg.n_valid, "test": cfg.n_test}
    seen: set[str] = set()
    splits: dict[str, list[Problem]] = {}
    for split in SPLITS:
        items: list[Problem] = []
        attempts = 0
        while len(items) < sizes[split]:
            attempts += 1
            if attempts > 50 * sum(sizes.values()) + 1000:
                raise UserInputError(
                    f"synth task: cannot draw {sizes[split]} distinct {split} problems; raise task.max_value"
                )
            problem = make_problem(rng, f"synth-{split}-{len(items)}", cfg)
            if problem.question not in seen:
                seen.add(problem.question)
                items.append(problem)
        splits[split] = items
    return splits
