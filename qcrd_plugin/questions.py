"""Questions of every task family, in one canonical shape, and the task families themselves.

A :class:`Question` is what the student is asked and what a teacher explains: its text (choices,
premise and hypothesis already laid out), its canonical gold answer and the answer type that
says how any generated answer is read (``qcrd_plugin.answers``). The same records feed training
and the lm-eval tasks in ``tasks/``, so both read an answer the same way.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .answers import CHOICE_LETTERS, stated_answer

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

    def stated(self, text: str, require_phrase: bool | None = None) -> float | str | None:
        """The answer ``text`` (a teacher's or student's rationale) states, read as this question's
        answers are read (answer type, choices, the task's ``answer_pattern``)."""
        phrase = self.require_answer_phrase if require_phrase is None else require_phrase
        return stated_answer(text, self.answer_type, self.choices, phrase, self.answer_pattern, self.case_fold, self.question)

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
    "synth": Family("synth", "number", ("generated",), "synthetic multi-step arithmetic (embedded)"),
    "svamp": Family("svamp", "number", ("dsbs", "mcc_kd", "mentor_kd", "eit"), "SVAMP"),
    "cqa": Family("cqa", "choice", ("dsbs", "eit"), "CommonsenseQA"),
    "anli1": Family("anli1", "label", ("dsbs",), "ANLI round 1"),
    "esnli": Family("esnli", "label", ("dsbs",), "e-SNLI"),
    "strategyqa": Family("strategyqa", "yesno", ("mentor_kd", "eit"), "StrategyQA"),
    "gsm8k": Family("gsm8k", "number", ("gsm8k",), "GSM8K"),
}


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


class UserInputError(ValueError):
    """A mistake in what the user gave (data, pools, specs); the message names file, line and key.
    The CLI prints it as one line and exits with code 2."""


class DataMissingError(UserInputError, FileNotFoundError):
    """A task's data files are not where the data directory says; the message says how to fix it."""


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records atomically (temp file, then rename), ASCII-escaped so that tools which also
    split lines on U+2028 still see one record per line."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())  # the rename must not land before the data does
    tmp.replace(path)


# The longest line (one record) a JSONL reader accepts. Real records are kilobytes (a pool line
# with 64 long samples stays well under 1 MiB); a longer line is a wrong file or a corrupt one,
# and is refused after reading this much of it instead of being loaded whole.
MAX_LINE_BYTES = 4 * 2**20


def decode_utf8(raw: bytes, path: Path, error: type[Exception] | None = None) -> str:
    """A whole file's bytes as text (a UTF-8 byte-order mark is dropped). Bytes that are not
    UTF-8 raise ``error`` (default UserInputError) naming the file and the line they sit on."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise (error or UserInputError)(f"{path}: line {line}: not UTF-8 text") from None


def parse_json(text: str, path: Path, line: int | None = None):
    """``json.loads(text)``; a bad document raises UserInputError naming ``path`` and the line
    (``line``, or where the JSON parser stopped)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}:{line or err.lineno}: not valid JSON ({err.msg})") from None
    except (ValueError, RecursionError) as err:  # an int over 4300 digits; nesting too deep
        where = f"{path}:{line}" if line else str(path)
        raise UserInputError(f"{where}: not valid JSON ({type(err).__name__}: {str(err)[:80]})") from None


def read_jsonl(path: Path, opener: Callable = open) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line of a JSONL file (``opener``: ``gzip.open``
    for a ``.gz`` file).

    Bad input policy (docs/formats.md): no line is ever skipped. A line that is not UTF-8, not
    JSON, not a JSON object or longer than :data:`MAX_LINE_BYTES` raises UserInputError naming
    the file and line; so does a file that cannot be read (a folder, a corrupt ``.gz``). Blank
    lines are not records, and a UTF-8 byte-order mark at the start is allowed.
    """
    records = []
    try:
        with opener(path, "rb") as handle:
            number = 0
            while raw := handle.readline(MAX_LINE_BYTES + 1):
                number += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    raise UserInputError(f"{path}:{number}: line longer than {MAX_LINE_BYTES // 2**20} MiB, the limit for "
                                         "one record (is this a JSONL file?)")
                try:
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise UserInputError(f"{path}:{number}: not UTF-8 text (byte {err.start + 1} of the line)") from None
                if not line.strip():
                    continue
                record = parse_json(line, path, number)
                if not isinstance(record, dict):
                    raise UserInputError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                records.append((number, record))
    except (OSError, EOFError, zlib.error) as err:  # a folder, an unreadable file, a corrupt or truncated .gz
        if isinstance(err, FileNotFoundError):
            raise UserInputError(f"{path}: file not found") from None
        raise UserInputError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    return records


@dataclass
class TaskData:
    """Questions per split and, when the source ships teacher rationales, pools per split."""

    family: str
    source: str
    questions: dict[str, list[Question]] = field(default_factory=dict)
    pools: dict[str, list] = field(default_factory=dict)  # split -> list[teachers.PoolEntry]
    notes: list[str] = field(default_factory=list)
    problems: dict = field(default_factory=dict)  # synth only: id -> synth.Problem (simulated teacher)


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line, record) for every record of a user's data file: JSONL (one object per line), or one
    JSON array of objects, as many datasets ship (each record named by the line it starts on).
    The bad input policy of :func:`read_jsonl` holds for both."""
    try:
        head = Path(path).open("rb").read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise UserInputError(f"{path}: file not found") from None
        raise UserInputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not head.startswith(b"["):
        return read_jsonl(Path(path))
    text = decode_utf8(Path(path).read_bytes(), Path(path))
    decoder, records = json.JSONDecoder(), []
    position = text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            raise UserInputError(f"{path}:{text.count(chr(10), 0, position) + 1}: not valid JSON (the array is not closed with ']')")
        if text[position] == "]":
            break
        line = text.count("\n", 0, position) + 1
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise UserInputError(f"{path}:{text.count(chr(10), 0, err.pos) + 1}: not valid JSON ({err.msg})") from None
        except (ValueError, RecursionError) as err:
            raise UserInputError(f"{path}:{line}: not valid JSON ({type(err).__name__})") from None
        if not isinstance(record, dict):
            raise UserInputError(f"{path}:{line}: expected a JSON object in the array, got {type(record).__name__}")
        records.append((line, record))
    if text[position + 1:].strip():
        raise UserInputError(f"{path}:{text.count(chr(10), 0, position) + 1}: text after the closing ']' of the JSON array")
    return records
