"""Teacher pools: K sampled rationales per question, and their JSONL format (docs/formats.md).

Every teacher backend writes this format and the ``pool`` backend reads it back, so a pool made
once (by an LLM, or converted from a public release) can be reused by any run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .config import short_repr as _short
from .errors import UserInputError
from .files import read_jsonl, write_jsonl

POOL_FORMAT = "qcrd-pool/1"


class PoolError(UserInputError):
    """A malformed pool file; the message names the file, line and key."""


@dataclass
class TeacherSample:
    """One sampled rationale and the answer read from it (None = unparseable)."""

    rationale: str
    answer: float | str | None
    error: str = ""  # simulated teacher only: which mistake was injected ("" = none)
    teacher: str = ""  # which teacher wrote it, when a pool mixes several
    # Why the teacher stopped ("stop", "length" at its token limit, ...); "" when unknown (a public release).
    finish_reason: str = ""


_UNREAD = object()  # a ReleasedSample's answer before its first read (None means "no answer")


class ReleasedSample(TeacherSample):
    """A sample of a released pool whose answer is read from its rationale on first use.

    A release (or a task brought as data with its chains) holds all its chains (MCC-KD's SVAMP: 7,000),
    while a run trains on a few of them and
    an lm-eval task only wants a gold rationale per question; reading all of them took seconds at
    each load (docs/performance.md). ``read(rationale)`` gives the answer (``Question.stated``);
    setting ``answer`` replaces it.
    """

    def __init__(self, rationale: str, read, **fields):
        self._read, self._answer = read, _UNREAD
        super().__init__(rationale, _UNREAD, **fields)

    @property
    def answer(self) -> float | str | None:
        if self._answer is _UNREAD:
            self._answer = self._read(self.rationale)
        return self._answer

    @answer.setter
    def answer(self, value: float | str | None) -> None:
        self._answer = value

    def __reduce__(self):
        # A pickle or copy carries the answer, read now, as a plain sample (not the unread marker).
        return TeacherSample, (self.rationale, self.answer, self.error, self.teacher, self.finish_reason)


@dataclass
class PoolEntry:
    """All K samples of one question: one line of a pool JSONL file."""

    id: str
    question: str
    gold: str
    samples: list[TeacherSample] = field(default_factory=list)
    where: str = ""  # file:line it was read from (not written back)

    def to_record(self) -> dict:
        """The JSON line written to ``pool_<split>.jsonl``."""
        return {
            "format": POOL_FORMAT,
            "id": self.id,
            "question": self.question,
            "gold": self.gold,
            "samples": [
                {
                    "rationale": s.rationale,
                    "answer": s.answer,
                    "error": s.error,
                    "teacher": s.teacher,
                    "finish_reason": s.finish_reason,
                }
                for s in self.samples
            ],
        }

    @classmethod
    def from_record(cls, record: dict, where: str = "pool") -> "PoolEntry":
        """Inverse of :meth:`to_record`; a missing key or a value of the wrong type raises
        PoolError naming ``where`` and the key (a list where an answer belongs would otherwise
        surface as a crash deep inside self-consistency voting). Unknown keys are ignored."""
        if not isinstance(record, dict):
            raise PoolError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for key in ("id", "question", "gold", "samples"):
            if key not in record:
                raise PoolError(f"{where}: missing key {key!r}")
        if record.get("format", POOL_FORMAT) != POOL_FORMAT:
            raise PoolError(f"{where}: key 'format': {_short(record['format'])} is not {POOL_FORMAT!r}")
        uid = record["id"]
        if isinstance(uid, bool) or not isinstance(uid, (str, int)) or not str(uid).strip():
            raise PoolError(f"{where}: key 'id': expected a non-empty string or an integer, got {_short(uid)}")
        _check(record["question"], (str,), f"{where}: key 'question'")
        gold = _check(record["gold"], (str, int, float), f"{where}: key 'gold'")
        if not isinstance(record["samples"], list):
            raise PoolError(
                f"{where}: key 'samples': expected a list of objects with a 'rationale', "
                f"got {_short(record['samples'])}"
            )
        samples = []
        for i, sample in enumerate(record["samples"]):
            at = f"{where}: key 'samples[{i}]"
            if not isinstance(sample, dict):
                raise PoolError(f"{at}': expected an object with a 'rationale', got {_short(sample)}")
            if "rationale" not in sample:
                raise PoolError(f"{at}': missing key 'rationale'")
            samples.append(
                TeacherSample(
                    _check(sample["rationale"], (str,), f"{at}.rationale'"),
                    _check(sample.get("answer"), (str, int, float, type(None)), f"{at}.answer'"),
                    _check(sample.get("error", ""), (str,), f"{at}.error'"),
                    _check(sample.get("teacher", ""), (str,), f"{at}.teacher'"),
                    _check(sample.get("finish_reason") or "", (str,), f"{at}.finish_reason'"),
                )
            )
        return cls(str(uid), record["question"], str(gold), samples)


def _check(value, kinds: tuple, where: str):
    """``value`` when it is one of ``kinds`` (never a bool, never a NaN or infinite number)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, kinds)
        or isinstance(value, float)
        and not math.isfinite(value)
    ):
        names = " or ".join(
            "null" if k is type(None) else {"str": "a string", "int": "a number", "float": "a number"}[k.__name__]
            for k in kinds
            if k is not float or int not in kinds
        )
        raise PoolError(f"{where}: expected {names}, got {type(value).__name__} {_short(value)}")
    return value


def write_pool(path: Path, entries: list[PoolEntry]) -> None:
    """Write a pool atomically."""
    write_jsonl(path, [entry.to_record() for entry in entries])


def read_pool(path: Path) -> list[PoolEntry]:
    """Read a pool JSONL file; a bad line raises PoolError naming the file, line and key."""
    if not Path(path).is_file():
        raise PoolError(f"{path}: pool file not found")
    try:
        records = read_jsonl(Path(path))
    except UserInputError as err:
        raise PoolError(str(err)) from None
    if not records:
        raise PoolError(f"{path}: empty pool (no records)")
    entries, first_line = [], {}
    for number, record in records:
        entry = PoolEntry.from_record(record, f"{path}:{number}")
        entry.where = f"{path}:{number}"
        if entry.id in first_line:  # the pool teacher keys samples by id: a repeat would silently replace one
            raise PoolError(f"{path}:{number}: key 'id': {entry.id!r} repeats the id on line {first_line[entry.id]}")
        first_line[entry.id] = number
        entries.append(entry)
    return entries
