"""Task loading: a ``task`` config section -> questions per split (and pools when the data has them).

Three kinds of task, one result type (:class:`~qcrd_plugin.questions.TaskData`):

- ``synth``: generated in code (``qcrd_plugin.synth``); its teacher is the simulated one;
- a real family (``svamp``, ``cqa``, ...): read by ``qcrd_plugin.sources`` from the data directory;
- ``custom``: a task brought as data, declared by a small spec YAML (``harness_configs/tasks/``).

The lm-eval task utilities call :func:`load_task` too, so training and evaluation always see the
same questions with the same answer type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .answers import ANSWER_TYPES, CHOICE_LETTERS, NLI_LABELS, answers_match, canonical_text, normalize_answer, safe_eval, stated_answer
from .config import ConfigError, TaskConfig, load_yaml, short_repr as _short
from .pools import PoolEntry, TeacherSample
from .questions import DataMissingError, Question, TaskData, UserInputError, choices_block, read_jsonl
from .sources import load_source
from .synth import generate

SPEC_FORMAT = 1
SPLITS = ("train", "validation", "test")


class TaskSpecError(UserInputError):
    """A mistake in a custom task spec or its data; the message names the file, line and key."""


@dataclass
class TaskSpec:
    """A task brought as data (``qcrd-task-spec``, documented in the README)."""

    name: str
    answer_type: str
    files: dict[str, Path]
    question: str = "question"
    answer: str = "answer"
    choices: str = ""
    rationale: str = ""
    samples: str = ""
    context: str = ""
    path: Path = Path(".")


def read_spec(path: str | Path) -> TaskSpec:
    """Parse and validate a task spec YAML; data paths are relative to the spec's folder."""
    path = Path(path)
    try:
        data = load_yaml(path)  # the safe loader: no !!python tags, no repeated keys
    except ConfigError as err:
        message = str(err)
        raise TaskSpecError(f"{path}: task spec not found" if message.endswith("file not found") else message) from None
    if not isinstance(data, dict):
        raise TaskSpecError(f"{path}: expected a mapping with keys name, answer_type, files, fields")
    known = {"task_spec", "name", "answer_type", "files", "fields", "description"}
    for key in data:
        if key not in known:
            raise TaskSpecError(f"{path}: unknown key {str(key)!r} (known: {', '.join(sorted(known))})")
    for key in ("name", "answer_type", "files"):
        if key not in data:
            raise TaskSpecError(f"{path}: missing key '{key}'")
    if data.get("task_spec", SPEC_FORMAT) != SPEC_FORMAT:
        raise TaskSpecError(f"{path}: key 'task_spec': version {_short(data['task_spec'])} is not supported (this version reads {SPEC_FORMAT})")
    if not isinstance(data["name"], str) or not data["name"].strip():
        raise TaskSpecError(f"{path}: key 'name': expected a non-empty string, got {_short(data['name'])}")
    if not isinstance(data["answer_type"], str) or data["answer_type"] not in ANSWER_TYPES:
        raise TaskSpecError(f"{path}: key 'answer_type': {_short(data['answer_type'])} is not one of {', '.join(ANSWER_TYPES)}")
    files = data["files"]
    if not isinstance(files, dict) or not files or any(split not in SPLITS for split in files):
        raise TaskSpecError(f"{path}: key 'files': expected a mapping of {'/'.join(SPLITS)} to JSONL paths")
    for split, file in files.items():
        if not isinstance(file, str) or not file.strip():
            raise TaskSpecError(f"{path}: key 'files.{split}': expected a JSONL path, got {_short(file)}")
    if "test" not in files:
        raise TaskSpecError(f"{path}: key 'files.test': a task needs a test file (lm-eval scores it)")
    fields = data.get("fields") or {}
    if not isinstance(fields, dict):
        raise TaskSpecError(f"{path}: key 'fields': expected a mapping of field (question, answer, ...) to JSON key, got {_short(fields)}")
    allowed = {"question", "answer", "choices", "rationale", "samples", "context"}
    for key, value in fields.items():
        if key not in allowed:
            raise TaskSpecError(f"{path}: unknown key {'fields.' + str(key)!r} (known: {', '.join(sorted(allowed))})")
        if not isinstance(value, str):
            raise TaskSpecError(f"{path}: key 'fields.{key}': expected the name of a JSON field, got {_short(value)}")
    return TaskSpec(data["name"], data["answer_type"], {s: (path.parent / f) for s, f in files.items()},
                    path=path, **fields)


# Gold answers must say what they mean: the lenient readers of ``qcrd_plugin.answers`` are for
# model output ("not entailment" reads as entailment there), not for the data a task is scored on.
_GOLD_TYPES = {"number": ((str, int, float), "a number or a string"), "choice": ((str,), "a string"),
               "label": ((str, int), "a string or 0, 1, 2"), "yesno": ((str, bool), "a string or true/false"),
               "text": ((str, int, float), "a string or a number")}
_GOLD_WORDS = {"label": NLI_LABELS, "yesno": ("yes", "no", "true", "false")}


def _gold(value, answer_type: str, choices: list[str] | None, where: str) -> str:
    """The canonical gold text of one record's answer; TaskSpecError (naming ``where``, which
    includes the key) unless it is unambiguously an answer of ``answer_type``."""
    kinds, expected = _GOLD_TYPES[answer_type]
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise TaskSpecError(f"{where}: expected a {answer_type} answer ({expected}), got {type(value).__name__} {_short(value)}")
    text = value.strip().lower().rstrip(".").strip() if isinstance(value, str) else ""
    if answer_type == "choice":
        # A letter ("b", "(B)") within the choices, else exactly one choice's text. Computed
        # here: the model-output reader would take the choice "a dog" for the letter a.
        letters = CHOICE_LETTERS[: len(choices)] if choices else CHOICE_LETTERS[:5]
        letter = re.fullmatch(r"\(?([a-j])\)?", text)
        texts = [c.strip().lower() for c in choices or ()]
        gold = (letter.group(1) if letter and letter.group(1) in letters
                else CHOICE_LETTERS[texts.index(text)] if text and text in texts else None)
    else:
        exact = True
        if isinstance(value, str) and answer_type in _GOLD_WORDS:
            exact = text in _GOLD_WORDS[answer_type]
        elif isinstance(value, str) and answer_type == "number":
            exact = safe_eval(text.lstrip("$")) is not None  # "1,200", "84 / 2"; not "7 apples", "3 or 4"
        gold = normalize_answer(value, answer_type, choices) if exact else None
    if gold is None:
        hint = {"label": f"one of {', '.join(NLI_LABELS)} (or 0, 1, 2)", "yesno": "yes or no (or true/false)",
                "choice": "a choice letter or a choice's text", "number": "a number or an arithmetic expression"}.get(answer_type, "non-empty text")
        raise TaskSpecError(f"{where}: {_short(value)} is not a valid {answer_type} answer (expected {hint})")
    return canonical_text(gold)


def _custom(spec: TaskSpec) -> TaskData:
    """Questions (and pools, when records carry teacher samples) of a task brought as data."""
    data = TaskData(spec.name, "custom")
    seen: dict[str, str] = {}  # id -> file:line of its first record, over every split
    for split, file in spec.files.items():
        if not file.exists():
            raise DataMissingError(f"{spec.path}: key 'files.{split}': {file} not found")
        records = read_jsonl(file)
        if not records:
            raise TaskSpecError(f"{file}: no records (key 'files.{split}' of {spec.path} names an empty file)")
        questions, entries = [], []
        for line, record in records:
            where = f"{file}:{line}"
            for key in (spec.question, spec.answer):
                if key not in record:
                    raise TaskSpecError(f"{where}: missing key '{key}'")
            text = record[spec.question]
            if not isinstance(text, str) or not text.strip():
                raise TaskSpecError(f"{where}: key '{spec.question}': expected a non-empty string, got {type(text).__name__} {_short(text)}")
            choices = record.get(spec.choices) if spec.choices else None
            if choices is not None and not (isinstance(choices, list) and 2 <= len(choices) <= len(CHOICE_LETTERS)
                                            and all(isinstance(c, str) and c.strip() for c in choices)):
                raise TaskSpecError(f"{where}: key '{spec.choices}': expected a list of 2 to {len(CHOICE_LETTERS)} non-empty strings, "
                                    f"got {_short(choices)}")
            gold = _gold(record[spec.answer], spec.answer_type, choices, f"{where}: key '{spec.answer}'")
            for key in (spec.context, spec.rationale):
                if key and record.get(key) is not None and not isinstance(record[key], str):
                    raise TaskSpecError(f"{where}: key '{key}': expected a string, got {type(record[key]).__name__} {_short(record[key])}")
            text = text.strip()
            if spec.context and record.get(spec.context):
                text = f"{record[spec.context].strip()}\n{text}"
            if choices:
                text += "\n" + choices_block(choices)
            uid = record.get("id", f"{spec.name}-{split}-{line}")
            if isinstance(uid, bool) or not isinstance(uid, (str, int)) or not str(uid).strip():
                raise TaskSpecError(f"{where}: key 'id': expected a non-empty string or an integer, got {type(uid).__name__} {_short(uid)}")
            if str(uid) in seen:  # pools and runs key questions by id: a repeat would silently replace one
                raise TaskSpecError(f"{where}: key 'id': {str(uid)!r} repeats the id of {seen[str(uid)]}")
            seen[str(uid)] = where
            q = Question(str(uid), text, gold, spec.answer_type, choices, (record.get(spec.rationale) or "") if spec.rationale else "")
            questions.append(q)
            if spec.samples and record.get(spec.samples):
                samples = record[spec.samples]
                if not isinstance(samples, list) or not all(isinstance(s, str) for s in samples):
                    raise TaskSpecError(f"{where}: key '{spec.samples}': expected a list of rationale strings")
                entries.append(PoolEntry(q.id, q.question, q.answer,
                                         [TeacherSample(s, stated_answer(s, q.answer_type, q.choices)) for s in samples]))
        data.questions[split] = questions
        if entries:
            data.pools[split] = entries
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
            q.gold_rationale = next((s.rationale for s in by_id[q.id].samples if answers_match(s.answer, q.answer)), "")
