"""Task loading: a ``task`` config section -> questions per split (and pools when the data has them).

Three kinds of task, one result type (:class:`~qcrd_plugin.questions.TaskData`):

- ``synth``: generated in code (``qcrd_plugin.synth``); its teacher is the simulated one;
- a real family (``svamp``, ``cqa``, ...): read by ``qcrd_plugin.sources`` from the data directory;
- ``custom``: a task brought as data, declared by a small spec YAML (``harness_configs/tasks/``).

The lm-eval task utilities call :func:`load_task` too, so training and evaluation always see the
same questions with the same answer type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .answers import ANSWER_TYPES, answers_match, canonical_text, normalize_answer, stated_answer
from .config import TaskConfig
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskSpecError(f"{path}: task spec not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise TaskSpecError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise TaskSpecError(f"{path}: expected a mapping with keys name, answer_type, files, fields")
    known = {"task_spec", "name", "answer_type", "files", "fields", "description"}
    for key in data:
        if key not in known:
            raise TaskSpecError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(known))})")
    for key in ("name", "answer_type", "files"):
        if key not in data:
            raise TaskSpecError(f"{path}: missing key '{key}'")
    if data["answer_type"] not in ANSWER_TYPES:
        raise TaskSpecError(f"{path}: key 'answer_type': {data['answer_type']!r} is not one of {', '.join(ANSWER_TYPES)}")
    files = data["files"]
    if not isinstance(files, dict) or not files or any(split not in SPLITS for split in files):
        raise TaskSpecError(f"{path}: key 'files': expected a mapping of {'/'.join(SPLITS)} to JSONL paths")
    if "test" not in files:
        raise TaskSpecError(f"{path}: key 'files.test': a task needs a test file (lm-eval scores it)")
    fields = data.get("fields") or {}
    allowed = {"question", "answer", "choices", "rationale", "samples", "context"}
    for key, value in fields.items():
        if key not in allowed:
            raise TaskSpecError(f"{path}: unknown key 'fields.{key}' (known: {', '.join(sorted(allowed))})")
        if not isinstance(value, str):
            raise TaskSpecError(f"{path}: key 'fields.{key}': expected the name of a JSON field, got {value!r}")
    return TaskSpec(str(data["name"]), data["answer_type"], {s: (path.parent / f) for s, f in files.items()},
                    path=path, **fields)


def _custom(spec: TaskSpec) -> TaskData:
    """Questions (and pools, when records carry teacher samples) of a task brought as data."""
    data = TaskData(spec.name, "custom")
    for split, file in spec.files.items():
        if not file.exists():
            raise DataMissingError(f"{spec.path}: key 'files.{split}': {file} not found")
        records = read_jsonl(file)
        questions, entries = [], []
        for line, record in records:
            where = f"{file}:{line}"
            for key in (spec.question, spec.answer):
                if key not in record:
                    raise TaskSpecError(f"{where}: missing key '{key}'")
            choices = record.get(spec.choices) if spec.choices else None
            if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
                raise TaskSpecError(f"{where}: key '{spec.choices}': expected a list of strings")
            gold = normalize_answer(record[spec.answer], spec.answer_type, choices)
            if gold is None:
                raise TaskSpecError(f"{where}: key '{spec.answer}': {record[spec.answer]!r} is not a valid {spec.answer_type} answer")
            text = str(record[spec.question]).strip()
            if spec.context and record.get(spec.context):
                text = f"{str(record[spec.context]).strip()}\n{text}"
            if choices:
                text += "\n" + choices_block(choices)
            q = Question(str(record.get("id", f"{spec.name}-{split}-{line}")), text,
                         canonical_text(gold), spec.answer_type, choices,
                         str(record.get(spec.rationale, "")) if spec.rationale else "")
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
