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

import gzip
import json
import random
import re
from pathlib import Path
from typing import Callable

from .answers import CHOICE_LETTERS, NLI_LABELS, canonical_text, format_number, normalize_answer, safe_eval, stated_answer
from .pools import PoolEntry, TeacherSample
from .questions import FAMILIES, DataMissingError, UserInputError, Question, TaskData, choices_block, data_dir

PREPARE_HINT = "qcrd-bench data prepare --task {task} --source {source}"


# ---- reading files as released ------------------------------------------------------------

def _open(path: Path):
    """Open ``path`` or its ``.gz`` twin; DataMissingError names both when neither exists."""
    if path.exists():
        return open(path, encoding="utf-8")
    gz = path.with_name(path.name + ".gz")
    if gz.exists():
        return gzip.open(gz, "rt", encoding="utf-8")
    raise DataMissingError(str(path))


def _json(path: Path):
    with _open(path) as handle:
        return json.load(handle)


def _jsonl(path: Path) -> list[dict]:
    with _open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _exists(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".gz").exists()


def join_key(text: str) -> str:
    """SOURCES.md's join key: lower-cased alphanumerics."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def cut_completion(text: str) -> str:
    """A PaLM completion up to the hallucinated next item ("Q:" or "Premise:")."""
    cut = re.split(r"\n\s*(?:Q:|Premise:)", text, maxsplit=1)[0]
    return cut.strip()


def _pool_entry(q: Question, rationales: list[str], teachers: list[str] | None = None) -> PoolEntry:
    samples = [
        TeacherSample(r, stated_answer(r, q.answer_type, q.choices), teacher=(teachers[i] if teachers else ""))
        for i, r in enumerate(rationales)
    ]
    return PoolEntry(q.id, q.question, q.answer, samples)


def _batched_completions(folder: Path, split: str, n: int) -> list[str]:
    """``llm/<split>_CoT_<k>.json`` batches concatenated in order (batch k = items k*B..)."""
    out: list[str] = []
    k = 0
    while len(out) < n and _exists(folder / f"{split}_CoT_{k}.json"):
        out += _json(folder / f"{split}_CoT_{k}.json")
        k += 1
    return out


# ---- Distilling step-by-step (PaLM-540B) --------------------------------------------------

def _dsbs(root: Path, family: str) -> TaskData:
    base = root / "distilling_step_by_step" / "datasets"
    data = TaskData(family, "dsbs")
    files = {"svamp": ("train", "test"), "cqa": ("train", "test"), "anli1": ("valid", "test"), "esnli": ("valid", "test")}[family]
    for raw_split in files:
        split = "validation" if raw_split == "valid" else raw_split
        rows = _jsonl(base / family / f"{family}_{raw_split}.json")
        questions = [_dsbs_question(family, split, i, row) for i, row in enumerate(rows)]
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
        value = safe_eval(row["label"])  # DSS labels are equations, e.g. "( 84.0 / 2.0 )"
        return Question(uid, row["input"], format_number(value), "number")
    if family == "cqa":
        answer = CHOICE_LETTERS[row["choices"].index(row["answer"])]
        text = row["question"] + "\n" + choices_block(row["choices"])
        return Question(row.get("id") or uid, text, answer, "choice", list(row["choices"]), row.get("abstractive_explanation", ""))
    text = f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}"
    rationale = row.get("reason") or row.get("explanation_1") or ""
    return Question(row.get("uid") or uid, text, NLI_LABELS[int(row["label"])], "label", None, rationale)


# ---- MCC-KD (10 raw samples per SVAMP question) --------------------------------------------

def _mcc_kd(root: Path, family: str) -> TaskData:
    base = root / "mcc_kd" / "data" / "SVAMP"
    data = TaskData(family, "mcc_kd")
    for raw_split, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        rows = _json(base / f"{raw_split}.json")
        questions = [Question(f"mcc_kd-svamp-{split}-{i}", r["instruction"].strip(), format_number(float(r["label"])), "number")
                     for i, r in enumerate(rows)]
        data.questions[split] = questions
        outputs = [r["output"] if isinstance(r["output"], list) else [] for r in rows]
        if any(outputs):
            data.pools[split] = [_pool_entry(q, [o.strip() for o in out]) for q, out in zip(questions, outputs)]
    return data


# ---- Mentor-KD (3 correct samples per question) --------------------------------------------

def _mentor_kd(root: Path, family: str) -> TaskData:
    base = root / "mentor_kd" / "data" / "main"
    data = TaskData(family, "mentor_kd")
    name, answer_type = {"svamp": ("svamp", "number"), "strategyqa": ("strategy_qa", "yesno")}[family]
    grouped: dict[str, list[dict]] = {}
    for row in _json(base / f"{name}_3_train.json"):
        grouped.setdefault(row["input"], []).append(row)
    questions, entries = [], []
    for i, (text, rows) in enumerate(grouped.items()):
        gold = normalize_answer(rows[0]["answer"], answer_type)
        q = Question(f"mentor_kd-{family}-train-{i}", text.strip(), canonical_text(gold), answer_type)
        questions.append(q)
        entry = _pool_entry(q, [r["chain"].strip() for r in rows])
        for sample, row in zip(entry.samples, rows):
            # Mentor-KD kept only chains it judged correct (initial_correct); many StrategyQA
            # chains end without stating yes/no, so their answer is the gold one it was kept for.
            if str(row.get("initial_correct")).lower() == "true" and sample.answer is None:
                sample.answer = q.answer
        entries.append(entry)
    data.questions["train"], data.pools["train"] = questions, entries
    test = _json(base / f"{name}_test.json")
    data.questions["test"] = [
        Question(f"mentor_kd-{family}-test-{i}", r["input"].strip(), canonical_text(normalize_answer(r["answer"], answer_type)), answer_type)
        for i, r in enumerate(test)
    ]
    return data


# ---- EIT (several teachers, pooled) ---------------------------------------------------------

_EIT_FILES = {
    "svamp": [f"SVAMP_ChatGPT_level{i}_ranked" for i in range(1, 7)] + [f"SVAMP_gemini_level{i}_ranked" for i in range(1, 7)]
    + [f"SVAMP_llama_level{i}_ranked" for i in range(1, 5)],
    "cqa": ["csqa_gemini_level1_ranked"] + [f"csqa_llama_level{i}_ranked" for i in range(1, 4)],
    "strategyqa": [f"strategyQA_chatgpt_level_{i}_ranked" for i in range(1, 7)] + [f"stqa_gemini_level{i}_ranked" for i in range(1, 7)]
    + [f"stqa_llama_level{i}_ranked" for i in range(1, 7)],
}
_EIT_GOLD = {"svamp": "SVAMP_only_ans", "cqa": "commonsenseQA_onlyans", "strategyqa": "strategyQA_onlyans"}


def _eit_cqa_text(instruction: str) -> tuple[str, list[str]]:
    """EIT's CQA instruction -> (question text in our layout, choices)."""
    body = instruction.strip()
    body = body[3:] if body.startswith("Q: ") else body
    head, _, tail = re.split(r"(Answer [Cc]hoices:)", body, maxsplit=1) if re.search(r"Answer [Cc]hoices:", body) else (body, "", "")
    # "A: race track, B: populated areas" (train) or "\nA. bank\nB. library" (test)
    choices = [c.strip().rstrip(",").strip() for c in re.split(r"(?:^|,|\s)\s*[A-E][:.]\s+", tail.strip()) if c.strip()]
    return head.strip() + "\n" + choices_block(choices), choices


def _eit(root: Path, family: str) -> TaskData:
    base = root / "eit_distilling_cot_reasoning"
    data = TaskData(family, "eit")
    answer_type = FAMILIES[family].answer_type
    gold_rows = _json(base / "data" / f"{_EIT_GOLD[family]}.json")
    order, questions = [], {}
    for i, row in enumerate(gold_rows):
        key = join_key(row["instruction"])
        text, choices = (_eit_cqa_text(row["instruction"]) if family == "cqa" else (row["instruction"].strip(), None))
        gold = normalize_answer(row["output"], answer_type, choices)
        questions[key] = Question(f"eit-{family}-train-{i}", text, canonical_text(gold), answer_type, choices)
        order.append(key)
    rationales: dict[str, list[tuple[str, str]]] = {key: [] for key in order}
    for name in _EIT_FILES[family]:
        teacher = name.split("_")[1].lower()
        for row in _json(base / "data" / f"{name}.json"):
            key = join_key(row["instruction"])
            if key in rationales and row.get("output", "").strip():
                rationales[key].append((row["output"].strip(), teacher))
    data.questions["train"] = [questions[k] for k in order]
    data.pools["train"] = [_pool_entry(questions[k], [r for r, _ in rationales[k]], [t for _, t in rationales[k]]) for k in order]
    if family == "cqa":
        test = _json(base / "Evaluation" / "reasoning_eval" / "csqa_test.json")
        data.questions["test"] = []
        for i, row in enumerate(test):
            text, choices = _eit_cqa_text(row["instruction"])
            data.questions["test"].append(Question(f"eit-cqa-test-{i}", text, normalize_answer(row["label"], "choice", choices), "choice", choices))
    elif family == "strategyqa":
        test = _json(base / "Evaluation" / "reasoning_eval" / "strategyQA_test.json")
        data.questions["test"] = [Question(f"eit-strategyqa-test-{i}", r["instruction"].strip(), normalize_answer(r["label"], "yesno"), "yesno")
                                  for i, r in enumerate(test)]
    else:
        # EIT ships no SVAMP test split: test on the SVAMP.json items that are not in its train.
        svamp = _json(root / "distilling_step_by_step" / "datasets" / "svamp" / "SVAMP.json")
        seen = set(order)
        rest = [r for r in svamp if join_key(r["Body"] + " " + r["Question"]) not in seen]
        data.questions["test"] = [Question(f"eit-svamp-test-{i}", f"{r['Body'].strip()} {r['Question'].strip()}", format_number(float(r["Answer"])), "number")
                                  for i, r in enumerate(rest)]
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
    for split in ("train", "test"):
        rows = _jsonl(base / f"{split}.jsonl")
        questions = []
        for i, row in enumerate(rows):
            answer = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
            questions.append(Question(f"gsm8k-{split}-{i}", row["question"].strip(), format_number(float(answer)), "number",
                                      None, gsm8k_rationale(row["answer"])))
        data.questions[split] = questions
        data.pools[split] = [_pool_entry(q, [q.gold_rationale], ["human"]) for q in questions]
    return data


# ---- the Hugging Face hub (needs a network; not exercised offline) -------------------------

_HUB = {"svamp": ("ChilleD/SVAMP", None), "cqa": ("tau/commonsense_qa", None), "anli1": ("facebook/anli", None),
        "esnli": ("esnli", None), "strategyqa": ("ChilleD/StrategyQA", None), "gsm8k": ("openai/gsm8k", "main")}


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
                qs.append(Question(uid, f"{row['Body']} {row['Question']}", format_number(float(row["Answer"])), "number"))
            elif family == "cqa":
                choices = list(row["choices"]["text"])
                if not row["answerKey"]:
                    continue
                qs.append(Question(uid, row["question"] + "\n" + choices_block(choices), row["answerKey"].lower(), "choice", choices))
            elif family in ("anli1", "esnli"):
                if row["label"] not in (0, 1, 2):
                    continue
                qs.append(Question(uid, f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}", NLI_LABELS[row["label"]], "label"))
            elif family == "strategyqa":
                qs.append(Question(uid, row["question"], "yes" if row["answer"] else "no", "yesno"))
            else:
                answer = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
                qs.append(Question(uid, row["question"], format_number(float(answer)), "number", None, gsm8k_rationale(row["answer"])))
        data.questions[out_split] = qs
    return data


ADAPTERS: dict[str, Callable[[Path, str], TaskData]] = {
    "dsbs": _dsbs, "mcc_kd": _mcc_kd, "mentor_kd": _mentor_kd, "eit": _eit, "gsm8k": _gsm8k, "hub": _hub,
}


def load_source(family: str, source: str | None = None, directory: str | Path | None = None) -> TaskData:
    """Questions and pools of ``family`` from ``source`` (default: the family's first source).

    Raises DataMissingError with one message naming the data directory setting and the prepare
    command when a file is missing, and ValueError for an unknown family or source.
    """
    if family not in FAMILIES or family == "synth":
        raise UserInputError(f"unknown task family {family!r}; expected one of {', '.join(f for f in FAMILIES if f != 'synth')}")
    source = source or FAMILIES[family].sources[0]
    if source not in FAMILIES[family].sources and source != "hub":
        raise UserInputError(f"task {family!r} has no source {source!r}; choose from {', '.join(FAMILIES[family].sources)} (or hub)")
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
