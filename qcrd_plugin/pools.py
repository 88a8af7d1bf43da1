"""Teacher pools: K sampled rationales per question, and their JSONL format (docs/formats.md).

Every teacher backend writes this format and the ``pool`` backend reads it back, so a pool made
once (by an LLM, or converted from a public release) can be reused by any run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .questions import UserInputError, read_jsonl, write_jsonl

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


@dataclass
class PoolEntry:
    """All K samples of one question: one line of a pool JSONL file."""

    id: str
    question: str
    gold: str
    samples: list[TeacherSample] = field(default_factory=list)

    def to_record(self) -> dict:
        """The JSON line written to ``pool_<split>.jsonl``."""
        return {
            "format": POOL_FORMAT,
            "id": self.id,
            "question": self.question,
            "gold": self.gold,
            "samples": [{"rationale": s.rationale, "answer": s.answer, "error": s.error, "teacher": s.teacher}
                        for s in self.samples],
        }

    @classmethod
    def from_record(cls, record: dict, where: str = "pool") -> "PoolEntry":
        """Inverse of :meth:`to_record`; a missing key raises ValueError naming ``where`` and the key."""
        try:
            samples = [TeacherSample(s["rationale"], s.get("answer"), s.get("error", ""), s.get("teacher", ""))
                       for s in record["samples"]]
            return cls(str(record["id"]), record["question"], str(record["gold"]), samples)
        except KeyError as err:
            raise PoolError(f"{where}: missing key {err.args[0]!r}") from None
        except TypeError:
            raise PoolError(f"{where}: 'samples' must be a list of objects with a 'rationale'") from None


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
    return [PoolEntry.from_record(record, f"{path}:{number}") for number, record in records]
