"""Adapters for the public release layouts under the data directory (``$QCRD_DATA_DIR``).

Each adapter reads one source's files as released (``.gz`` or not), joins questions to their
teacher rationales by the rules in the data folder's ``SOURCES.md`` and returns canonical
:class:`~qcrd_plugin.questions.Question` records plus teacher pools. Nothing is written here;
``qcrd-bench data prepare`` writes the canonical JSONL.

Sources: ``dsbs`` (Distilling step-by-step, PaLM-540B: SVAMP, CQA, ANLI1, e-SNLI), ``mcc_kd``
(SVAMP, 10 raw samples per question), ``mentor_kd`` (SVAMP, StrategyQA; 3 correct samples),
``eit`` (SVAMP, CQA, StrategyQA; several teachers pooled), ``gsm8k`` (human solutions) and
``hub`` (the same datasets from the Hugging Face hub; needs a network, so it is never exercised
offline).
"""

from __future__ import annotations

import functools
import gzip
import math
import random
import re
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TypeVar

from .answers import CHOICE_LETTERS, NLI_LABELS, canonical_text, format_number, normalize_answer, safe_eval
from .config import short_repr as _short
from .errors import DataMissingError, UserInputError
from .files import decode_utf8, parse_json, read_jsonl
from .pools import PoolEntry, ReleasedSample
from .questions import FAMILIES, Question, TaskData, choices_block, data_dir

T = TypeVar("T")

PREPARE_HINT = "qcrd-bench data prepare --task {task} --source {source}"


# ---- reading files as released ------------------------------------------------------------
#
# Bad input policy (docs/formats.md): a release file that cannot be read, or a record that lacks
# a key or holds a value of the wrong kind, stops the load with one UserInputError naming the
# file, the record (the line of a JSONL file, the position in a JSON array) and the key. Nothing
# is dropped silently: EIT's two skips (a question its gold file repeats, a rationale for a
# question it does not have) are counted in ``notes``.


def _find(path: Path) -> Path:
    """``path`` or its ``.gz`` twin; DataMissingError names ``path`` when neither exists."""
    if path.exists():
        return path
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gz
    raise DataMissingError(str(path))


def _opener(path: Path) -> Callable:
    return gzip.open if path.suffix == ".gz" else open


def _json(path: Path) -> list:
    """The records of a release file holding one JSON array."""
    path = _find(path)
    try:
        with _opener(path)(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as err:  # a folder, a corrupt or truncated .gz
        raise UserInputError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    data = parse_json(decode_utf8(raw, path), path)
    if not isinstance(data, list):
        raise UserInputError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return data


def _records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) for every record of a JSON array file; ``where`` names file and position."""
    found = _find(path)
    rows = []
    data = _json(path)
    if not data:
        raise UserInputError(f"{found}: no records (a release file is never empty: a download cut short?)")
    for i, row in enumerate(data, 1):
        where = f"{found}: record {i}"
        if not isinstance(row, dict):
            raise UserInputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        rows.append((where, row))
    return rows


def _jsonl(path: Path) -> list[tuple[str, dict]]:
    """(where, record) for every line of a release JSONL file; ``where`` names file and line."""
    found = _find(path)
    rows = [(f"{found}:{line}", row) for line, row in read_jsonl(found, _opener(found))]
    if not rows:
        raise UserInputError(f"{found}: no records (a release file is never empty: a download cut short?)")
    return rows


def _exists(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".gz").exists()


@contextmanager
def _record(where: str):
    """Turn what a malformed record raises while it is converted (a missing key, a value of the
    wrong kind) into one UserInputError naming the file, the record and the key."""
    try:
        yield
    except UserInputError:
        raise
    except KeyError as err:
        raise UserInputError(f"{where}: missing key {err.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError, IndexError) as err:
        raise UserInputError(f"{where}: {err}") from None


def _each(rows: list[tuple[str, dict]], build: Callable[[int, dict], T]) -> list[T]:
    """``build(index, record)`` for every record, each under :func:`_record`."""
    out = []
    for i, (where, row) in enumerate(rows):
        with _record(where):
            out.append(build(i, row))
    return out


def _str(row: dict, key: str) -> str:
    """``row[key]`` when it is a string (a ValueError naming the key otherwise)."""
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"key {key!r}: expected a string, got {type(value).__name__} {_short(value)}")
    return value


def _float(row: dict, key: str, text: str | None = None) -> float:
    """``row[key]`` (or ``text`` read from it) as a finite float (a ValueError naming the key otherwise)."""
    value = row[key] if text is None else text
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"key {key!r}: {_short(value)} is not a number")
    return number


def _gold(row: dict, key: str, answer_type: str, choices: list[str] | None = None) -> str:
    """The canonical gold answer in ``row[key]`` (a ValueError naming the key when none parses)."""
    gold = normalize_answer(row[key], answer_type, choices)
    if gold is None or isinstance(row[key], (list, dict)):
        raise ValueError(f"key {key!r}: {_short(row[key])} is not a valid {answer_type} answer")
    return canonical_text(gold)


def join_key(text: str) -> str:
    """SOURCES.md's join key: lower-cased alphanumerics."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def cut_completion(text: str) -> str:
    """A PaLM completion up to the hallucinated next item ("Q:" or "Premise:")."""
    cut = re.split(r"\n\s*(?:Q:|Premise:)", text, maxsplit=1)[0]
    return cut.strip()


def _pool_entry(q: Question, rationales: list[str], teachers: list[str] | None = None) -> PoolEntry:
    samples = [
        ReleasedSample(r, q.stated, teacher=(teachers[i] if teachers else "")) for i, r in enumerate(rationales)
    ]
    return PoolEntry(q.id, q.question, q.answer, samples)


def _batched_completions(folder: Path, split: str, n: int) -> list[str]:
    """``llm/<split>_CoT_<k>.json`` batches concatenated in order (batch k = items k*B..)."""
    out: list[str] = []
    k = 0
    while len(out) < n and _exists(folder / f"{split}_CoT_{k}.json"):
        batch = folder / f"{split}_CoT_{k}.json"
        for i, completion in enumerate(_json(batch), 1):
            if not isinstance(completion, str):
                raise UserInputError(
                    f"{_find(batch)}: record {i}: expected a completion string, got {type(completion).__name__}"
                )
            out.append(completion)
        k += 1
    return out


# ---- Distilling step-by-step (PaLM-540B) --------------------------------------------------


def _dsbs(root: Path, family: str) -> TaskData:
    base = root / "distilling_step_by_step" / "datasets"
    data = TaskData(family, "dsbs")
    files = {
        "svamp": ("train", "test"),
        "cqa": ("train", "test"),
        "anli1": ("valid", "test"),
        "esnli": ("valid", "test"),
    }[family]
    for raw_split in files:
        split = "validation" if raw_split == "valid" else raw_split
        rows = _jsonl(base / family / f"{family}_{raw_split}.json")
        questions = _each(rows, lambda i, row: _dsbs_question(family, split, i, row))
        completions = [cut_completion(c) for c in _batched_completions(base / family / "llm", raw_split, len(rows))]
        data.questions[split] = questions
        data.pools[split] = [_pool_entry(q, [c], ["palm-540b"]) for q, c in zip(questions, completions)]
        if len(completions) != len(rows):
            data.notes.append(f"{split}: {len(rows)} questions but {len(completions)} PaLM completions")
    if family in ("anli1", "esnli"):
        data.notes.append("train inputs are not in the release (SOURCES.md): train on the validation split")
    return data


def _dsbs_question(family: str, split: str, index: int, row: dict) -> Question:
    uid = f"dsbs-{family}-{split}-{index}"
    if family == "svamp":
        value = safe_eval(_str(row, "label"))  # DSS labels are equations, e.g. "( 84.0 / 2.0 )"
        if value is None:
            raise ValueError(f"key 'label': {_short(row['label'])} is not an arithmetic expression")
        return Question(uid, _str(row, "input"), format_number(value), "number")
    if family == "cqa":
        choices = row["choices"]
        if not (
            isinstance(choices, list)
            and 2 <= len(choices) <= len(CHOICE_LETTERS)
            and all(isinstance(c, str) for c in choices)
        ):
            raise ValueError(
                f"key 'choices': expected a list of 2 to {len(CHOICE_LETTERS)} strings, got {_short(choices)}"
            )
        if row["answer"] not in choices:
            raise ValueError(f"key 'answer': {_short(row['answer'])} is not one of the choices")
        answer = CHOICE_LETTERS[choices.index(row["answer"])]
        text = _str(row, "question") + "\n" + choices_block(choices)
        return Question(
            row.get("id") or uid, text, answer, "choice", list(choices), row.get("abstractive_explanation") or ""
        )
    text = f"Premise: {_str(row, 'premise')}\nHypothesis: {_str(row, 'hypothesis')}"
    label = row["label"]
    if isinstance(label, bool) or str(label).strip() not in ("0", "1", "2"):  # int(-1) would index from the end
        raise ValueError(f"key 'label': {_short(label)} is not an NLI label id (0, 1, 2)")
    rationale = row.get("reason") or row.get("explanation_1") or ""
    return Question(row.get("uid") or uid, text, NLI_LABELS[int(str(label).strip())], "label", None, rationale)


# ---- MCC-KD (10 raw samples per SVAMP question) --------------------------------------------


def _mcc_kd(root: Path, family: str) -> TaskData:
    base = root / "mcc_kd" / "data" / "SVAMP"
    data = TaskData(family, "mcc_kd")
    for raw_split, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        rows = _records(base / f"{raw_split}.json")
        questions = _each(
            rows,
            lambda i, r: Question(
                f"mcc_kd-svamp-{split}-{i}",
                _str(r, "instruction").strip(),
                format_number(_float(r, "label")),
                "number",
            ),
        )
        data.questions[split] = questions
        outputs = _each(
            rows, lambda i, r: [o.strip() for o in _samples(r, "output")] if isinstance(r["output"], list) else []
        )
        if any(outputs):
            data.pools[split] = [_pool_entry(q, out) for q, out in zip(questions, outputs)]
    return data


def _mentor_kd_sample(q: Question, chain: str, kept_as_correct: bool) -> ReleasedSample:
    """Mentor-KD kept only chains it judged correct (initial_correct); many StrategyQA chains end
    without stating yes/no, so such a chain's answer, when it states none, is the gold one it was kept for."""
    return ReleasedSample(chain, functools.partial(_stated_or_gold, q) if kept_as_correct else q.stated)


def _stated_or_gold(q: Question, text: str) -> float | str | None:
    stated = q.stated(text)
    return q.answer if stated is None else stated


def _samples(row: dict, key: str) -> list[str]:
    """``row[key]`` when it is a list of strings (a ValueError naming the key otherwise)."""
    value = row[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"key {key!r}: expected a list of strings, got {_short(value)}")
    return value


# ---- Mentor-KD (3 correct samples per question) --------------------------------------------


def _mentor_kd(root: Path, family: str) -> TaskData:
    base = root / "mentor_kd" / "data" / "main"
    data = TaskData(family, "mentor_kd")
    name, answer_type = {"svamp": ("svamp", "number"), "strategyqa": ("strategy_qa", "yesno")}[family]
    grouped: dict[str, list[tuple[str, dict]]] = {}
    for where, row in _records(base / f"{name}_3_train.json"):
        with _record(where):
            grouped.setdefault(_str(row, "input"), []).append((where, row))
    questions, entries = [], []
    for i, (text, rows) in enumerate(grouped.items()):
        with _record(rows[0][0]):
            gold = _gold(rows[0][1], "answer", answer_type)
        q = Question(f"mentor_kd-{family}-train-{i}", text.strip(), gold, answer_type)
        questions.append(q)
        chains = _each(rows, lambda _, r: _str(r, "chain").strip())
        kept = [str(row.get("initial_correct")).lower() == "true" for _, row in rows]
        entries.append(
            PoolEntry(q.id, q.question, q.answer, [_mentor_kd_sample(q, c, k) for c, k in zip(chains, kept)])
        )
    data.questions["train"], data.pools["train"] = questions, entries
    data.questions["test"] = _each(
        _records(base / f"{name}_test.json"),
        lambda i, r: Question(
            f"mentor_kd-{family}-test-{i}", _str(r, "input").strip(), _gold(r, "answer", answer_type), answer_type
        ),
    )
    return data


# ---- EIT (several teachers, pooled) ---------------------------------------------------------

_EIT_FILES = {
    "svamp": [f"SVAMP_ChatGPT_level{i}_ranked" for i in range(1, 7)]
    + [f"SVAMP_gemini_level{i}_ranked" for i in range(1, 7)]
    + [f"SVAMP_llama_level{i}_ranked" for i in range(1, 5)],
    "cqa": ["csqa_gemini_level1_ranked"] + [f"csqa_llama_level{i}_ranked" for i in range(1, 4)],
    "strategyqa": [f"strategyQA_chatgpt_level_{i}_ranked" for i in range(1, 7)]
    + [f"stqa_gemini_level{i}_ranked" for i in range(1, 7)]
    + [f"stqa_llama_level{i}_ranked" for i in range(1, 7)],
}
_EIT_GOLD = {"svamp": "SVAMP_only_ans", "cqa": "commonsenseQA_onlyans", "strategyqa": "strategyQA_onlyans"}


def _eit_cqa_text(instruction: str) -> tuple[str, list[str]]:
    """EIT's CQA instruction -> (question text in our layout, choices)."""
    body = instruction.strip()
    body = body[3:] if body.startswith("Q: ") else body
    head, _, tail = (
        re.split(r"(Answer [Cc]hoices:)", body, maxsplit=1)
        if re.search(r"Answer [Cc]hoices:", body)
        else (body, "", "")
    )
    # "A: race track, B: populated areas" (train) or "\nA. bank\nB. library" (test)
    choices = [
        c.strip().rstrip(",").strip() for c in re.split(r"(?:^|,|\s)\s*[A-E][:.]\s+", tail.strip()) if c.strip()
    ]
    if len(choices) > len(CHOICE_LETTERS):
        raise ValueError(
            f"key 'instruction': {len(choices)} answer choices, "
            f"more than the {len(CHOICE_LETTERS)} a question can have"
        )
    return head.strip() + "\n" + choices_block(choices), choices


def _eit(root: Path, family: str) -> TaskData:
    base = root / "eit_distilling_cot_reasoning"
    data = TaskData(family, "eit")
    answer_type = FAMILIES[family].answer_type
    order, questions, repeats = [], {}, 0
    for i, (where, row) in enumerate(_records(base / "data" / f"{_EIT_GOLD[family]}.json")):
        with _record(where):
            key = join_key(_str(row, "instruction"))
            if key in questions:
                # The gold file repeats a question (StrategyQA: one, with the same answer). One id
                # per question: keep the first, count the repeat; its rationales are pooled below.
                repeats += 1
                continue
            text, choices = (
                _eit_cqa_text(row["instruction"]) if family == "cqa" else (row["instruction"].strip(), None)
            )
            questions[key] = Question(
                f"eit-{family}-train-{i}", text, _gold(row, "output", answer_type, choices), answer_type, choices
            )
            order.append(key)
    if repeats:
        data.notes.append(
            f"train: {repeats} repeated question(s) in {_EIT_GOLD[family]}.json skipped (same text as an earlier one; "
            f"{len(order)} of {len(order) + repeats} kept)"
        )
    rationales: dict[str, list[tuple[str, str]]] = {key: [] for key in order}
    unmatched = 0
    for name in _EIT_FILES[family]:
        teacher = name.split("_")[1].lower()
        for where, row in _records(base / "data" / f"{name}.json"):
            with _record(where):
                key = join_key(_str(row, "instruction"))
                output = row.get("output") or ""
                if not isinstance(output, str):
                    raise ValueError(f"key 'output': expected a string, got {type(output).__name__}")
            if key not in rationales:
                unmatched += 1
            elif output.strip():
                rationales[key].append((output.strip(), teacher))
    if unmatched:
        data.notes.append(
            f"train: {unmatched} teacher rationale(s) skipped: their question is not in {_EIT_GOLD[family]}.json"
        )
    data.questions["train"] = [questions[k] for k in order]
    data.pools["train"] = [
        _pool_entry(questions[k], [r for r, _ in rationales[k]], [t for _, t in rationales[k]]) for k in order
    ]
    if family == "cqa":

        def cqa_test(i: int, row: dict) -> Question:
            text, choices = _eit_cqa_text(_str(row, "instruction"))
            return Question(f"eit-cqa-test-{i}", text, _gold(row, "label", "choice", choices), "choice", choices)

        data.questions["test"] = _each(_records(base / "Evaluation" / "reasoning_eval" / "csqa_test.json"), cqa_test)
    elif family == "strategyqa":
        data.questions["test"] = _each(
            _records(base / "Evaluation" / "reasoning_eval" / "strategyQA_test.json"),
            lambda i, r: Question(
                f"eit-strategyqa-test-{i}", _str(r, "instruction").strip(), _gold(r, "label", "yesno"), "yesno"
            ),
        )
    else:
        # EIT ships no SVAMP test split: test on the SVAMP.json items that are not in its train.
        svamp = _records(root / "distilling_step_by_step" / "datasets" / "svamp" / "SVAMP.json")
        seen = set(order)
        keys = _each(svamp, lambda _, r: join_key(_str(r, "Body") + " " + _str(r, "Question")))
        rest = [item for item, key in zip(svamp, keys) if key not in seen]
        data.questions["test"] = _each(
            rest,
            lambda i, r: Question(
                f"eit-svamp-test-{i}",
                f"{r['Body'].strip()} {r['Question'].strip()}",
                format_number(_float(r, "Answer")),
                "number",
            ),
        )
        data.notes.append("test = the SVAMP.json items not in EIT's 700 train questions (EIT ships no SVAMP test)")
    return data


# ---- GSM8K (human solutions) ----------------------------------------------------------------


def gsm8k_rationale(solution: str) -> str:
    """A GSM8K solution without its ``<<calc>>`` annotations, "#### 72" as "The answer is 72."."""
    body, _, answer = solution.partition("####")
    body = re.sub(r"<<[^>]*>>", "", body).strip().replace("\n", " ")
    return f"{body} The answer is {answer.strip()}."


def _gsm8k(root: Path, family: str) -> TaskData:
    base = root / "grade_school_math" / "grade_school_math" / "data"
    data = TaskData(family, "gsm8k")

    def question(split: str, i: int, row: dict) -> Question:
        solution = _str(row, "answer")
        if "####" not in solution:
            raise ValueError("key 'answer': no '#### <number>' final answer")
        answer = _float(row, "answer", solution.rsplit("####", 1)[-1].strip().replace(",", ""))
        return Question(
            f"gsm8k-{split}-{i}",
            _str(row, "question").strip(),
            format_number(answer),
            "number",
            None,
            gsm8k_rationale(solution),
        )

    for split in ("train", "test"):
        questions = _each(_jsonl(base / f"{split}.jsonl"), lambda i, row: question(split, i, row))
        data.questions[split] = questions
        data.pools[split] = [_pool_entry(q, [q.gold_rationale], ["human"]) for q in questions]
    return data


# ---- the Hugging Face hub (needs a network; not exercised offline) -------------------------

_HUB = {
    "svamp": ("ChilleD/SVAMP", None),
    "cqa": ("tau/commonsense_qa", None),
    "anli1": ("facebook/anli", None),
    "esnli": ("esnli", None),
    "strategyqa": ("ChilleD/StrategyQA", None),
    "gsm8k": ("openai/gsm8k", "main"),
}


def _hub(root: Path | None, family: str) -> TaskData:  # pragma: no cover - needs a network
    """Questions (no teacher pools) from the hub, for users with a network."""
    from datasets import load_dataset

    name, config = _HUB[family]
    raw = load_dataset(name, config)
    data = TaskData(family, "hub")
    for split, rows in raw.items():
        if family == "anli1" and not split.endswith("_r1"):
            continue
        out_split = {"train_r1": "train", "dev_r1": "validation", "test_r1": "test"}.get(split, split)
        qs = []
        for i, row in enumerate(rows):
            uid = f"hub-{family}-{out_split}-{i}"
            if family == "svamp":
                qs.append(
                    Question(uid, f"{row['Body']} {row['Question']}", format_number(float(row["Answer"])), "number")
                )
            elif family == "cqa":
                choices = list(row["choices"]["text"])
                if not row["answerKey"]:
                    continue
                qs.append(
                    Question(
                        uid,
                        row["question"] + "\n" + choices_block(choices),
                        row["answerKey"].lower(),
                        "choice",
                        choices,
                    )
                )
            elif family in ("anli1", "esnli"):
                if row["label"] not in (0, 1, 2):
                    continue
                qs.append(
                    Question(
                        uid,
                        f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}",
                        NLI_LABELS[row["label"]],
                        "label",
                    )
                )
            elif family == "strategyqa":
                qs.append(Question(uid, row["question"], "yes" if row["answer"] else "no", "yesno"))
            else:
                answer = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
                qs.append(
                    Question(
                        uid,
                        row["question"],
                        format_number(float(answer)),
                        "number",
                        None,
                        gsm8k_rationale(row["answer"]),
                    )
                )
        data.questions[out_split] = qs
    return data


ADAPTERS: dict[str, Callable[[Path, str], TaskData]] = {
    "dsbs": _dsbs,
    "mcc_kd": _mcc_kd,
    "mentor_kd": _mentor_kd,
    "eit": _eit,
    "gsm8k": _gsm8k,
    "hub": _hub,
}


def load_source(family: str, source: str | None = None, directory: str | Path | None = None) -> TaskData:
    """Questions and pools of ``family`` from ``source`` (default: the family's first source).

    Raises DataMissingError with one message naming the data directory setting and the prepare
    command when a file is missing, and ValueError for an unknown family or source.
    """
    if family not in FAMILIES or family == "synth":
        raise UserInputError(
            f"unknown task family {family!r}; expected one of {', '.join(f for f in FAMILIES if f != 'synth')}"
        )
    source = source or FAMILIES[family].sources[0]
    if source not in FAMILIES[family].sources and source != "hub":
        raise UserInputError(
            f"task {family!r} has no source {source!r}; choose from {', '.join(FAMILIES[family].sources)} (or hub)"
        )
    if source == "hub":
        return _hub(None, family)
    root = data_dir(directory)
    try:
        return ADAPTERS[source](root, family)
    except DataMissingError as err:
        raise DataMissingError(
            f"task {family} (source {source}): data file {err.args[0]} (or .gz) not found under the data directory "
            f"{root} (set by QCRD_DATA_DIR or --data-dir); point it at the folder holding the release layouts, "
            f"then check with `{PREPARE_HINT.format(task=family, source=source)}`"
        ) from None


def heldout_split(questions: list[Question], size: int, seed: int) -> tuple[list[Question], list[Question]]:
    """(train, held-out) by a seeded draw: for sources without a validation split with pools."""
    ids = sorted(range(len(questions)), key=lambda i: random.Random(f"{seed}:{questions[i].id}").random())
    held = set(ids[: min(size, max(0, len(questions) - 1))])
    return [q for i, q in enumerate(questions) if i not in held], [q for i, q in enumerate(questions) if i in held]
