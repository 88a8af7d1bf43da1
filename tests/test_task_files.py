"""A user's task files as they come (issue 14): JSON arrays, per-split field maps, the flat
one-row-per-rationale layout, choice letters as far as the data's choices go, empty sample lists,
a task's own ``answer_pattern``, pool sanity warnings, ``data inspect`` and prompts that are too
long. Every file is written here, in ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import invoke

from qcrd_plugin.data import long_prompts, prompt_ids
from qcrd_plugin.pools import read_pool
from qcrd_plugin.questions import Question
from qcrd_plugin.students import train_tokenizer
from qcrd_plugin.tasks import _custom, read_spec

ROWS = [
    {
        "q": f"Ben has {n} stickers and gives away 2. How many are left?",
        "a": n - 2,
        "s": [f"{n} - 2 = {n - 2}. The answer is {n - 2}.", f"So he has {n - 2} left."],
    }
    for n in range(5, 11)
]


def spec(folder: Path, body: str, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    path = folder / "task.yaml"
    path.write_text(body)
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_a_json_array_reads_like_jsonl_and_names_lines(tmp_path):
    body = (
        "name: t\nanswer_type: number\nfiles: {train: train.json, test: test.jsonl}\n"
        "fields: {question: q, answer: a, samples: s}\n"
    )
    array = "[\n" + ",\n".join(json.dumps(r) for r in ROWS) + "\n]\n"
    data = _custom(read_spec(spec(tmp_path, body, {"train.json": array, "test.jsonl": jsonl(ROWS)})))
    assert (
        [q.answer for q in data.questions["train"]]
        == [q.answer for q in data.questions["test"]]
        == [str(n - 2) for n in range(5, 11)]
    )
    assert [s.answer for s in data.pools["train"][0].samples] == [3.0, 3.0]
    # a bad record inside the array is named by the line it starts on
    bad = "[\n" + json.dumps(ROWS[0]) + ",\n" + json.dumps({**ROWS[1], "a": [1]}) + "\n]"
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(spec(tmp_path / "bad", body, {"train.json": bad, "test.jsonl": jsonl(ROWS)})),
        "--teacher",
        "pool",
        "--out",
        str(tmp_path / "p.jsonl"),
    )
    assert proc.returncode == 2 and "train.json:3: key 'a'" in proc.stderr, proc.stderr


def test_each_split_may_name_its_own_keys(tmp_path):
    body = (
        "name: t\nanswer_type: number\nfields: {question: q, answer: a}\n"
        "files:\n  train: train.jsonl\n  test: {path: test.jsonl, fields: {question: prompt, answer: target}}\n"
    )
    test_rows = [{"prompt": r["q"], "target": r["a"]} for r in ROWS]
    data = _custom(read_spec(spec(tmp_path, body, {"train.jsonl": jsonl(ROWS), "test.jsonl": jsonl(test_rows)})))
    assert [q.question for q in data.questions["test"]] == [r["q"] for r in ROWS]
    # the top-level map alone would not read the test file
    plain = (
        "name: t\nanswer_type: number\nfields: {question: q, answer: a}\n"
        "files: {train: train.jsonl, test: test.jsonl}\n"
    )
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(spec(tmp_path / "plain", plain, {"train.jsonl": jsonl(ROWS), "test.jsonl": jsonl(test_rows)})),
        "--teacher",
        "pool",
        "--out",
        str(tmp_path / "p.jsonl"),
    )
    assert proc.returncode == 2 and "test.jsonl:1: missing key 'q'" in proc.stderr, proc.stderr


def test_the_flat_layout_groups_rows_into_questions(tmp_path):
    flat = [{"q": r["q"], "a": r["a"], "chain": s} for r in ROWS for s in r["s"]] + [
        {"q": ROWS[0]["q"], "a": 3, "chain": ""}
    ]
    body = (
        "name: t\nanswer_type: number\nfiles: {train: flat.jsonl, test: flat.jsonl}\n"
        "fields: {question: q, answer: a, sample: chain}\n"
    )
    data = _custom(
        read_spec(
            spec(
                tmp_path,
                body.replace("test: flat.jsonl", "test: test.jsonl"),
                {"flat.jsonl": jsonl(flat), "test.jsonl": jsonl(ROWS)},
            )
        )
    )
    assert len(data.questions["train"]) == 6 and [len(e.samples) for e in data.pools["train"]] == [2] * 6
    # by an id field instead of the text; rows of one question must agree on gold
    by_id = [{**row, "qid": i // 2} for i, row in enumerate(flat[:-1])]
    body_id = body.replace("sample: chain}", "sample: chain, id: qid}\ngroup_by: id").replace(
        "test: flat.jsonl", "test: test.jsonl"
    )
    data = _custom(read_spec(spec(tmp_path / "id", body_id, {"flat.jsonl": jsonl(by_id), "test.jsonl": jsonl(ROWS)})))
    assert [e.id for e in data.pools["train"]] == [str(i) for i in range(6)]
    clash = by_id + [{**by_id[0], "a": 99}]
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(spec(tmp_path / "clash", body_id, {"flat.jsonl": jsonl(clash), "test.jsonl": jsonl(ROWS)})),
        "--teacher",
        "pool",
        "--out",
        str(tmp_path / "p.jsonl"),
    )
    assert (
        proc.returncode == 2
        and "flat.jsonl:13: key 'a': the gold answer differs from" in proc.stderr
        and "flat.jsonl:1" in proc.stderr
    ), proc.stderr


def test_choice_letters_go_as_far_as_the_choices(tmp_path):
    choices = [f"place {i}" for i in range(8)]
    rows = [{"q": "Where?", "options": choices, "a": "h", "s": ["Of these, the correct answer is (H) place 7."]}]
    body = (
        "name: t\nanswer_type: choice\nfiles: {train: t.jsonl, test: t.jsonl}\n"
        "fields: {question: q, answer: a, choices: options, samples: s}\n"
    )
    data = _custom(read_spec(spec(tmp_path, body, {"t.jsonl": jsonl(rows)})))
    assert data.questions["test"][0].answer == "h" and data.pools["train"][0].samples[0].answer == "h"
    # without a choices list any letter is a letter; the error says which letters a list allows
    no_list = "name: t\nanswer_type: choice\nfiles: {test: t.jsonl}\nfields: {question: q, answer: a}\n"
    data = _custom(read_spec(spec(tmp_path / "free", no_list, {"t.jsonl": jsonl([{"q": "Which?", "a": "(G)"}])})))
    assert data.questions["test"][0].answer == "g"
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(spec(tmp_path / "beyond", body, {"t.jsonl": jsonl([{**rows[0], "a": "k"}])})),
        "--teacher",
        "pool",
        "--out",
        str(tmp_path / "p.jsonl"),
    )
    assert proc.returncode == 2 and "a choice letter a-h" in proc.stderr, proc.stderr


def test_empty_sample_lists_are_counted_by_file_and_line_and_k_beyond_the_pool_warns(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[2]["s"] = []
    body = (
        "name: t\nanswer_type: number\nfiles: {train: train.jsonl, test: train.jsonl}\n"
        "fields: {question: q, answer: a, samples: s}\n"
    )
    path = spec(tmp_path, body, {"train.jsonl": jsonl(rows)})
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(path),
        "--teacher",
        "pool",
        "-k",
        "10",
        "--out",
        str(tmp_path / "p.jsonl"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 question(s) with no teacher sample" in proc.stdout and "train.jsonl:3" in proc.stdout
    assert "6 questions x 1.67 samples on average (10 asked" in proc.stdout
    assert (
        "asked for 10 samples per question, but the pool has fewer for 5 of 6 questions (as few as 2; at most 2)"
        in proc.stderr
    )
    assert "1 of 6 questions have no teacher sample" in proc.stderr
    assert [len(e.samples) for e in read_pool(tmp_path / "p.jsonl")] == [2, 2, 0, 2, 2, 2]


def test_a_spec_answer_pattern_reads_the_teachers_format(tmp_path):
    rows = [
        {
            "q": r["q"],
            "a": r["a"],
            "s": [f"We remove two. [[{r['a'] + 1}]] was a typo; final: <<{r['a']}>> apples, of 12"],
        }
        for r in ROWS
    ]
    body = (
        "name: t\nanswer_type: number\nfiles: {train: t.jsonl, test: t.jsonl}\n"
        "fields: {question: q, answer: a, samples: s}\n"
        "answer_pattern: 'final: <<(.+?)>>'\n"
    )
    path = spec(tmp_path, body, {"t.jsonl": jsonl(rows)})
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(path),
        "--teacher",
        "pool",
        "-k",
        "1",
        "--out",
        str(tmp_path / "p.jsonl"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "sample_accuracy 1" in proc.stdout and "warning" not in proc.stderr
    # without the pattern the built-in reader takes the concluding number (12): every sample wrong, and it says so
    path = spec(tmp_path / "plain", body.replace("answer_pattern", "#"), {"t.jsonl": jsonl(rows)})
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(path),
        "--teacher",
        "pool",
        "-k",
        "1",
        "--out",
        str(tmp_path / "q.jsonl"),
    )
    assert "sample_accuracy 0," in proc.stdout and "majority answer == gold for only 0.0% of questions" in proc.stderr
    assert "answer_type / answer_pattern" in proc.stderr
    bad = spec(tmp_path / "bad", body.replace("(.+?)", ".+?"), {"t.jsonl": jsonl(rows)})
    proc = invoke(
        "teach", "--task", "custom", "--spec", str(bad), "--teacher", "pool", "--out", str(tmp_path / "r.jsonl")
    )
    assert proc.returncode == 2 and "key 'answer_pattern': needs a capture group" in proc.stderr


def test_text_answers_on_choice_data_warn_and_data_inspect_shows_the_reading(tmp_path):
    rows = [
        {"q": f"Pick one {i}", "a": "red", "s": ["It is warm. So the answer is (a) red.", "The answer is (b) blue."]}
        for i in range(4)
    ]
    body = (
        "name: t\nanswer_type: text\nfiles: {train: t.jsonl, test: t.jsonl}\n"
        "fields: {question: q, answer: a, samples: s}\n"
    )
    pool = tmp_path / "p.jsonl"
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(spec(tmp_path, body, {"t.jsonl": jsonl(rows)})),
        "--teacher",
        "pool",
        "-k",
        "2",
        "--out",
        str(pool),
    )
    assert proc.returncode == 0 and "majority answer == gold for only 0.0%" in proc.stderr, proc.stderr
    proc = invoke("data", "inspect", str(pool), "-n", "2")
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.count("-> read '(a) red'  gold 'red'  XX") == 2 and proc.stdout.count("gold 'red'  question:") == 2
    )
    assert "majority answer == gold for only 0.0%" in proc.stderr
    assert invoke("data", "inspect", str(tmp_path / "missing.jsonl")).returncode == 2


def test_long_prompts_lose_their_middle_not_their_choices_and_are_counted():
    q = Question(
        "x",
        "Where do people go? "
        + "Some long context words. " * 60
        + "\nAnswer Choices:\n(a) race track\n(b) populated areas",
        "b",
        "choice",
        ["race track", "populated areas"],
    )
    tokenizer = train_tokenizer([q.question, "explain: predict: "], 200)
    full = tokenizer(["explain: " + q.question])["input_ids"][0]
    cut = prompt_ids(tokenizer, ["explain: " + q.question], 64)[0]
    assert len(full) > 64 and len(cut) == 64
    assert tokenizer.decode(cut, skip_special_tokens=True).endswith("(b) populated areas")
    assert cut[:16] == full[:16] and cut[-48:] == full[-48:]
    assert long_prompts(tokenizer, [q, Question("y", "2 + 2?", "4")], 64) == 1
    assert long_prompts(tokenizer, [q], len(full)) == 0
