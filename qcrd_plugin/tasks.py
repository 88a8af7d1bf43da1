"""Task loading: a ``task`` config section -> questions per split (and pools when the data has them).

Three kinds of task, one result type (:class:`~qcrd_plugin.questions.TaskData`):

- ``synth``: generated in code (``qcrd_plugin.synth``); its teacher is the simulated one;
- a real family (``svamp``, ``cqa``, ...): read by ``qcrd_plugin.sources`` from the data directory;
- ``custom``: a task brought as data, declared by a small spec YAML (``harness_configs/tasks/``).

The lm-eval task utilities call :func:`load_task` too, so training and evaluation always see the
same questions with the same answer type.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from .answers import (
    ANSWER_TYPES,
    CHOICE_LETTERS,
    NLI_LABELS,
    answers_match,
    canonical_text,
    normalize_answer,
    safe_eval,
)
from .config import TaskConfig, load_yaml
from .config import short_repr as _short
from .errors import ConfigError, DataMissingError, UserInputError
from .files import read_records
from .pools import PoolEntry, ReleasedSample
from .questions import Question, TaskData, choices_block
from .sources import load_source
from .synth import generate

SPEC_FORMAT = 1
SPLITS = ("train", "validation", "test")


class TaskSpecError(UserInputError):
    """A mistake in a custom task spec or its data; the message names the file, line and key."""


@dataclass
class Fields:
    """Which JSON key of a record holds what (a spec's ``fields``; ``files.<split>.fields`` overrides it)."""

    question: str = "question"
    answer: str = "answer"
    choices: str = ""
    rationale: str = ""  # a gold or human rationale (few-shot exemplars)
    samples: str = ""  # a list of teacher rationales per record
    sample: str = ""  # the flat layout: one teacher rationale per record, records grouped into questions
    context: str = ""
    id: str = "id"


@dataclass
class TaskSpec:
    """A task brought as data (``qcrd-task-spec``, documented in docs/data.md)."""

    name: str
    answer_type: str
    files: dict[str, Path]
    fields: dict[str, Fields]  # per split
    answer_pattern: str = ""
    case_fold: bool = True
    group_by: str = "question"  # the flat layout: "question" (its text) or "id"
    path: Path = Path(".")


_SPEC_KEYS = {
    "task_spec",
    "name",
    "answer_type",
    "files",
    "fields",
    "description",
    "answer_pattern",
    "case_fold",
    "group_by",
}


def _fields(value, path: Path, key: str = "fields", base: Fields | None = None) -> Fields:
    """The ``key`` mapping of the spec at ``path`` over ``base`` (the defaults, or the spec's top-level fields)."""
    if value is None:
        return base or Fields()
    if not isinstance(value, dict):
        raise TaskSpecError(
            f"{path}: key '{key}': expected a mapping of field (question, answer, ...) to JSON key, "
            f"got {_short(value)}"
        )
    allowed = [f.name for f in dataclasses.fields(Fields)]
    for name, json_key in value.items():
        if name not in allowed:
            raise TaskSpecError(f"{path}: unknown key {f'{key}.{name}'!r} (known: {', '.join(allowed)})")
        if not isinstance(json_key, str):
            raise TaskSpecError(
                f"{path}: key '{key}.{name}': expected the name of a JSON field, got {_short(json_key)}"
            )
    fields = dataclasses.replace(base or Fields(), **value)
    if fields.samples and fields.sample:
        raise TaskSpecError(
            f"{path}: key '{key}': 'samples' (a list per record) and 'sample' (one per record, the flat layout) "
            "exclude each other"
        )
    return fields


def _split_file(split: str, value, path: Path, base: Fields) -> tuple[Path, Fields]:
    """``files.<split>``: a path, or a mapping ``{path: ..., fields: {...}}`` with its own keys."""
    where = f"{path}: key 'files.{split}'"
    if isinstance(value, dict):
        unknown = [k for k in value if k not in ("path", "fields")]
        if unknown or "path" not in value:
            raise TaskSpecError(
                f"{where}: expected a path, or a mapping with 'path' and optional 'fields'"
                + (f" (unknown key {str(unknown[0])!r})" if unknown else " (missing key 'path')")
            )
        file, fields = value["path"], _fields(value.get("fields"), path, f"files.{split}.fields", base)
    else:
        file, fields = value, base
    if not isinstance(file, str) or not file.strip():
        raise TaskSpecError(f"{where}: expected a JSONL or JSON path, got {_short(file)}")
    return path.parent / file, fields


def read_spec(path: str | Path) -> TaskSpec:
    """Parse and validate a task spec YAML; data paths are relative to the spec's folder."""
    path = Path(path)
    try:
        data = load_yaml(path)  # the safe loader: no !!python tags, no repeated keys
    except ConfigError as err:
        message = str(err)
        raise TaskSpecError(
            f"{path}: task spec not found" if message.endswith("file not found") else message
        ) from None
    if not isinstance(data, dict):
        raise TaskSpecError(f"{path}: expected a mapping with keys name, answer_type, files, fields")
    for key in data:
        if key not in _SPEC_KEYS:
            raise TaskSpecError(f"{path}: unknown key {str(key)!r} (known: {', '.join(sorted(_SPEC_KEYS))})")
    for key in ("name", "answer_type", "files"):
        if key not in data:
            raise TaskSpecError(f"{path}: missing key '{key}'")
    if data.get("task_spec", SPEC_FORMAT) != SPEC_FORMAT:
        raise TaskSpecError(
            f"{path}: key 'task_spec': version {_short(data['task_spec'])} is not supported "
            f"(this version reads {SPEC_FORMAT})"
        )
    if not isinstance(data["name"], str) or not data["name"].strip():
        raise TaskSpecError(f"{path}: key 'name': expected a non-empty string, got {_short(data['name'])}")
    if not isinstance(data["answer_type"], str) or data["answer_type"] not in ANSWER_TYPES:
        raise TaskSpecError(
            f"{path}: key 'answer_type': {_short(data['answer_type'])} is not one of {', '.join(ANSWER_TYPES)}"
        )
    files = data["files"]
    if not isinstance(files, dict) or not files or any(split not in SPLITS for split in files):
        raise TaskSpecError(f"{path}: key 'files': expected a mapping of {'/'.join(SPLITS)} to JSONL paths")
    if "test" not in files:
        raise TaskSpecError(f"{path}: key 'files.test': a task needs a test file (lm-eval scores it)")
    base = _fields(data.get("fields"), path)
    per_split = {split: _split_file(split, value, path, base) for split, value in files.items()}
    pattern = data.get("answer_pattern") or ""
    if not isinstance(pattern, str):
        raise TaskSpecError(f"{path}: key 'answer_pattern': expected a regular expression, got {_short(pattern)}")
    if pattern:
        try:
            groups = re.compile(pattern).groups
        except re.error as err:
            raise TaskSpecError(f"{path}: key 'answer_pattern': not a valid regular expression ({err})") from None
        if groups < 1:
            raise TaskSpecError(
                f"{path}: key 'answer_pattern': needs a capture group around the answer, e.g. 'Final answer: (.+)'"
            )
    case_fold = data.get("case_fold", True)
    if not isinstance(case_fold, bool):
        raise TaskSpecError(f"{path}: key 'case_fold': expected true or false, got {_short(case_fold)}")
    group_by = data.get("group_by", "question")
    if group_by not in ("question", "id"):
        raise TaskSpecError(
            f"{path}: key 'group_by': {_short(group_by)} is not 'question' (the question text) or 'id' (fields.id)"
        )
    return TaskSpec(
        data["name"],
        data["answer_type"],
        {s: f for s, (f, _) in per_split.items()},
        {s: fields for s, (_, fields) in per_split.items()},
        pattern,
        case_fold,
        group_by,
        path,
    )


# Gold answers must say what they mean: the lenient readers of ``qcrd_plugin.answers`` are for
# model output ("not entailment" reads as entailment there), not for the data a task is scored on.
_GOLD_TYPES = {
    "number": ((str, int, float), "a number or a string"),
    "choice": ((str,), "a string"),
    "label": ((str, int), "a string or 0, 1, 2"),
    "yesno": ((str, bool), "a string or true/false"),
    "text": ((str, int, float), "a string or a number"),
}
_GOLD_WORDS = {"label": NLI_LABELS, "yesno": ("yes", "no", "true", "false")}


def _gold(value, answer_type: str, choices: list[str] | None, where: str) -> str:
    """The canonical gold text of one record's answer; TaskSpecError (naming ``where``, which
    includes the key) unless it is unambiguously an answer of ``answer_type``."""
    kinds, expected = _GOLD_TYPES[answer_type]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise TaskSpecError(
            f"{where}: expected a {answer_type} answer ({expected}), got {type(value).__name__} {_short(value)}"
        )
    text = value.strip().lower().rstrip(".").strip() if isinstance(value, str) else ""
    if answer_type == "choice":
        # A letter ("b", "(B)") within the choices, else exactly one choice's text. Computed
        # here: the model-output reader would take the choice "a dog" for the letter a.
        letters = CHOICE_LETTERS[: len(choices)] if choices else CHOICE_LETTERS
        letter = re.fullmatch(r"\(?([a-z])\)?", text)
        texts = [c.strip().lower() for c in choices or ()]
        gold = (
            letter.group(1)
            if letter and letter.group(1) in letters
            else CHOICE_LETTERS[texts.index(text)]
            if text and text in texts
            else None
        )
    else:
        exact = True
        if isinstance(value, str) and answer_type in _GOLD_WORDS:
            exact = text in _GOLD_WORDS[answer_type]
        elif isinstance(value, str) and answer_type == "number":
            exact = safe_eval(text.lstrip("$")) is not None  # "1,200", "84 / 2"; not "7 apples", "3 or 4"
        gold = normalize_answer(value, answer_type, choices) if exact else None
    if gold is None:
        hint = {
            "label": f"one of {', '.join(NLI_LABELS)} (or 0, 1, 2)",
            "yesno": "yes or no (or true/false)",
            "choice": (
                f"a choice letter a-{CHOICE_LETTERS[len(choices) - 1]} or a choice's text"
                if choices
                else "a choice letter a-z"
            ),
            "number": "a number or an arithmetic expression",
        }.get(answer_type, "non-empty text")
        raise TaskSpecError(f"{where}: {_short(value)} is not a valid {answer_type} answer (expected {hint})")
    return canonical_text(gold)


def _question(spec: TaskSpec, fields: Fields, split: str, line: int, record: dict, where: str) -> Question:
    """One record as a question (its gold checked, its choices laid out after the text)."""
    for key in (fields.question, fields.answer):
        if key not in record:
            raise TaskSpecError(f"{where}: missing key '{key}'")
    text = record[fields.question]
    if not isinstance(text, str) or not text.strip():
        raise TaskSpecError(
            f"{where}: key '{fields.question}': expected a non-empty string, got {type(text).__name__} {_short(text)}"
        )
    choices = record.get(fields.choices) if fields.choices else None
    if choices is not None and not (
        isinstance(choices, list)
        and 2 <= len(choices) <= len(CHOICE_LETTERS)
        and all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise TaskSpecError(
            f"{where}: key '{fields.choices}': expected a list of 2 to {len(CHOICE_LETTERS)} non-empty strings, "
            f"got {_short(choices)}"
        )
    gold = _gold(record[fields.answer], spec.answer_type, choices, f"{where}: key '{fields.answer}'")
    for key in (fields.context, fields.rationale):
        if key and record.get(key) is not None and not isinstance(record[key], str):
            raise TaskSpecError(
                f"{where}: key '{key}': expected a string, got {type(record[key]).__name__} {_short(record[key])}"
            )
    text = text.strip()
    if fields.context and record.get(fields.context):
        text = f"{record[fields.context].strip()}\n{text}"
    if choices:
        text += "\n" + choices_block(choices)
    uid = record.get(fields.id, f"{spec.name}-{split}-{line}")
    if isinstance(uid, bool) or not isinstance(uid, (str, int)) or not str(uid).strip():
        raise TaskSpecError(
            f"{where}: key '{fields.id}': expected a non-empty string or an integer, "
            f"got {type(uid).__name__} {_short(uid)}"
        )
    return Question(
        str(uid),
        text,
        gold,
        spec.answer_type,
        choices,
        (record.get(fields.rationale) or "") if fields.rationale else "",
        answer_pattern=spec.answer_pattern,
        case_fold=spec.case_fold,
    )


def _samples(fields: Fields, record: dict, where: str) -> list[str] | None:
    """The teacher rationales one record carries; None when it carries none (the spec declares no
    samples key, or the record lacks it: test records usually do), [] for an empty list."""
    key = fields.samples or fields.sample
    if not key or record.get(key) is None:
        return None
    value = record[key]
    if fields.sample:
        if not isinstance(value, str):
            raise TaskSpecError(
                f"{where}: key '{key}': expected one rationale string (the flat layout), "
                f"got {type(value).__name__} {_short(value)}"
            )
        return [value] if value.strip() else []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise TaskSpecError(f"{where}: key '{key}': expected a list of rationale strings")
    return [s for s in value if s.strip()]


def _split_questions(
    spec: TaskSpec, split: str, file: Path
) -> tuple[list[tuple[str, Question]], list[PoolEntry], list[str]]:
    """(file:line, question) of one split file, their pool entries and the lines of questions whose
    records gave their samples key but no sample in it. In the flat layout (``fields.sample``)
    records that share a question (``group_by``: its text, or ``fields.id``) are one question."""
    fields = spec.fields[split]
    records = read_records(file)
    if not records:
        raise TaskSpecError(f"{file}: no records (key 'files.{split}' of {spec.path} names an empty file)")
    groups: dict[str, list[tuple[str, Question, list[str]]]] = {}
    for line, record in records:
        where = f"{file}:{line}"
        q = _question(spec, fields, split, line, record, where)
        key = (q.question if spec.group_by == "question" else q.id) if fields.sample else f"{line}"
        group = groups.setdefault(key, [])
        if group and (group[0][1].answer != q.answer or group[0][1].question != q.question):
            what = "gold answer" if group[0][1].answer != q.answer else "question text"
            raise TaskSpecError(
                f"{where}: key '{fields.answer if what == 'gold answer' else fields.question}': "
                f"the {what} differs from {group[0][0]}, an earlier row of the same question "
                f"(group_by: {spec.group_by})"
            )
        group.append((where, q, _samples(fields, record, where)))
    questions, entries, empty = [], [], []
    for group in groups.values():
        where, q = group[0][0], group[0][1]
        texts = [s for _, _, samples in group for s in samples or ()]
        questions.append((where, q))
        if texts:
            entries.append(PoolEntry(q.id, q.question, q.answer, [ReleasedSample(s, q.stated) for s in texts]))
        elif any(samples is not None for _, _, samples in group):
            empty.append(where)
    return questions, entries, empty


def _custom(spec: TaskSpec) -> TaskData:
    """Questions (and pools, when records carry teacher samples) of a task brought as data."""
    data = TaskData(spec.name, "custom")
    seen: dict[str, str] = {}  # id -> file:line of its question, over every split: pools and runs key questions by id
    for split, file in spec.files.items():
        if not file.exists():
            raise DataMissingError(f"{spec.path}: key 'files.{split}': {file} not found")
        questions, entries, empty = _split_questions(spec, split, file)
        for where, q in questions:
            if q.id in seen:  # a repeat would silently replace one
                raise TaskSpecError(f"{where}: key '{spec.fields[split].id}': {q.id!r} repeats the id of {seen[q.id]}")
            seen[q.id] = where
        data.questions[split] = [q for _, q in questions]
        if entries:
            data.pools[split] = entries
        if empty:
            data.notes.append(
                f"{split}: {len(empty)} question(s) with no teacher sample (an empty list) have none in the pool "
                f"(first: {empty[0]})"
            )
    return data


def _synth(cfg: TaskConfig) -> TaskData:
    splits = generate(cfg)
    data = TaskData("synth", "generated")
    data.questions = {split: [p.to_question() for p in problems] for split, problems in splits.items()}
    data.problems = {p.id: p for problems in splits.values() for p in problems}  # for the simulated teacher
    return data


def load_task(cfg: TaskConfig) -> TaskData:
    """Questions (and any shipped pools) of the configured task."""
    if cfg.name == "synth":
        return _synth(cfg)
    if cfg.name == "custom":
        return _custom(read_spec(cfg.spec))
    return load_source(cfg.name, cfg.source or None, cfg.data_dir or None)


def default_train_split(data: TaskData) -> str:
    """``train`` when the task has one, else ``validation`` (ANLI1 and e-SNLI ship no train inputs)."""
    return "train" if data.questions.get("train") else "validation"


def fill_gold_rationales(data: TaskData) -> None:
    """Give questions without a gold rationale the first pool sample that reaches the gold answer
    (for few-shot chain-of-thought exemplars)."""
    for split, pool in data.pools.items():
        by_id = {entry.id: entry for entry in pool}
        for q in data.questions.get(split, []):
            if q.gold_rationale or q.id not in by_id:
                continue
            q.gold_rationale = next(
                (s.rationale for s in by_id[q.id].samples if answers_match(s.answer, q.answer)), ""
            )
