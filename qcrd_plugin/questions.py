"""Questions of every task family, in one canonical shape, and the task families themselves.

A :class:`Question` is what the student is asked and what a teacher explains: its text (choices,
premise and hypothesis already laid out), its canonical gold answer and the answer type that
says how any generated answer is read (``qcrd_plugin.answers``). The same records feed training
and the lm-eval tasks in ``tasks/``, so both read an answer the same way.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .answers import CHOICE_LETTERS, stated_answer
from .errors import DataMissingError

QUESTIONS_FORMAT = "qcrd-questions/1"
DATA_DIR_ENV = "QCRD_DATA_DIR"


@dataclass
class Question:
    """One question of any task, with its canonical gold answer (docs/formats.md)."""

    id: str
    question: str  # the text after "predict: " / "explain: " (choices etc. included)
    answer: str  # canonical gold: "42", "b", "neutral", "yes", or free text
    answer_type: str = "number"
    choices: list[str] | None = None
    gold_rationale: str = ""  # a human or gold rationale when the source has one
    require_answer_phrase: bool = False  # synthetic task: an answer must be stated explicitly
    answer_pattern: str = ""  # a task spec's own answer regex (its first group is the answer)
    case_fold: bool = True  # text answers: compare lower-cased

    def stated(self, text: str, require_phrase: bool | None = None, finish_reason: str = "") -> float | str | None:
        """The answer ``text`` (a teacher's or student's rationale) states, read as this question's
        answers are read (answer type, choices, the task's ``answer_pattern``). A chain its teacher
        stopped early (``finish_reason`` "length") gives only an answer it states explicitly, in a
        sentence it finished."""
        phrase = self.require_answer_phrase if require_phrase is None else require_phrase
        return stated_answer(
            text,
            self.answer_type,
            self.choices,
            phrase,
            self.answer_pattern,
            self.case_fold,
            self.question,
            finish_reason,
        )

    def to_record(self) -> dict:
        """The JSON line of a canonical questions file (and the lm-eval doc)."""
        return {"format": QUESTIONS_FORMAT, **asdict(self)}

    @classmethod
    def from_record(cls, record: dict) -> "Question":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in record.items() if k in known})


@dataclass(frozen=True)
class Family:
    """A task family: its answer type and the data sources that provide it."""

    name: str
    answer_type: str
    sources: tuple[str, ...]  # the first is the default
    title: str = ""


FAMILIES: dict[str, Family] = {
    "synth": Family("synth", "number", ("generated",), "synthetic multi-step arithmetic, embedded"),
    "svamp": Family("svamp", "number", ("dsbs", "mcc_kd", "mentor_kd", "eit"), "SVAMP"),
    "cqa": Family("cqa", "choice", ("dsbs", "eit"), "CommonsenseQA"),
    "anli1": Family("anli1", "label", ("dsbs",), "ANLI round 1"),
    "esnli": Family("esnli", "label", ("dsbs",), "e-SNLI"),
    "strategyqa": Family("strategyqa", "yesno", ("mentor_kd", "eit"), "StrategyQA"),
    "gsm8k": Family("gsm8k", "number", ("gsm8k",), "GSM8K"),
}

# The family of a task brought as data: declared by a spec YAML (task.spec), so it has no entry
# in FAMILIES (no fixed answer type, no data source of its own).
CUSTOM_FAMILY = "custom"
SYNTH_FAMILY = "synth"  # generated in memory: no data source to read or prepare


def family_names() -> tuple[str, ...]:
    """Every value ``task.name`` accepts: the registered families, then ``custom``."""
    return (*FAMILIES, CUSTOM_FAMILY)


def real_families() -> tuple[str, ...]:
    """The families read from a data source (every family but the embedded synthetic one)."""
    return tuple(f for f in FAMILIES if f != SYNTH_FAMILY)


def source_names() -> tuple[str, ...]:
    """Every data source some real family is read from, in first-mention order."""
    return tuple(dict.fromkeys(s for f in real_families() for s in FAMILIES[f].sources))


def describe_families() -> str:
    """``synth (its title), svamp (SVAMP), ..., or custom (...)``: the families for a help text."""
    named = [f"{name} ({family.title})" for name, family in FAMILIES.items()]
    return ", ".join(named) + f", or {CUSTOM_FAMILY} (a task brought as data, declared by task.spec)"


def choices_block(choices: list[str]) -> str:
    """Answer choices laid out as in Distilling step-by-step's CQA prompts."""
    return "Answer Choices:\n" + "\n".join(f"({CHOICE_LETTERS[i]}) {c}" for i, c in enumerate(choices))


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: ``explicit`` (``--data-dir`` / ``task.data_dir``), else ``$QCRD_DATA_DIR``."""
    value = str(explicit) if explicit else os.environ.get(DATA_DIR_ENV, "")
    if not value:
        raise DataMissingError(
            f"no data directory: set {DATA_DIR_ENV} (or --data-dir / task.data_dir) to the folder holding "
            "the release layouts (distilling_step_by_step/, mcc_kd/, ...); see docs/data.md"
        )
    return Path(value).expanduser()


@dataclass
class TaskData:
    """Questions per split and, when the source ships teacher rationales, pools per split."""

    family: str
    source: str
    questions: dict[str, list[Question]] = field(default_factory=dict)
    pools: dict[str, list] = field(default_factory=dict)  # split -> list[teachers.PoolEntry]
    notes: list[str] = field(default_factory=list)
    problems: dict = field(default_factory=dict)  # synth only: id -> synth.Problem (simulated teacher)
