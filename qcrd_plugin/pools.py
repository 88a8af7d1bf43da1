"""Teacher pools: K sampled rationales per question, and their JSONL format (docs/formats.md).

Every teacher backend writes this format and the ``pool`` backend reads it back, so a pool made
once (by an LLM, or converted from a public release) can be reused by any run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

POOL_FORMAT = "qcrd-pool/1"


class PoolError(ValueError):
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
    """Write a pool atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(entry.to_record()) + "\n")
    tmp.replace(path)


def read_pool(path: Path) -> list[PoolEntry]:
    """Read a pool JSONL file; a bad line raises ValueError naming the file and line."""
    entries = []
    if not Path(path).is_file():
        raise PoolError(f"{path}: pool file not found")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise PoolError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            entries.append(PoolEntry.from_record(record, f"{path}:{number}"))
    return entries
