"""Bad input (issue 6): every malformed file or config a user can hand the CLI gives exit code 2
and ONE line on stderr that names the file, the line and the key, never a traceback, never a
silent loss of records; or, where docs/formats.md ("Bad input policy") says so, a counted skip.

The corpus is generated here, in ``tmp_path``: bad task specs and their JSONL data, bad teacher
pools, bad run configs and corrupted copies of the release layouts that ``qcrd_plugin.sources``
reads (written from scratch, never copied from the shared data directory). Commands that are
cheap to start (``data prepare``, ``config``, ``run`` failing on its config) run as real
subprocesses, so the no-traceback check reads the real stderr. ``teach`` imports torch (seconds
per start), so its many cases run in-process with click's runner and two of them also run as
subprocesses.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from helpers import invoke

from qcrd_plugin.errors import UserInputError
from qcrd_plugin.files import MAX_LINE_BYTES, read_jsonl

REPO = Path(__file__).resolve().parents[2]
SHOP_SPEC = REPO / "harness_configs" / "tasks" / "shop_math.yaml"
QCRD_BENCH = str(Path(sys.executable).with_name("qcrd-bench"))
HUGE_LINE = 20 * 2**20  # a 20 MB single line: over MAX_LINE_BYTES, refused without being loaded


# ---- running the CLI and judging its answer ----------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "QCRD_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([QCRD_BENCH, *args], capture_output=True, text=True, env=env, timeout=120)


def assert_one_clear_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, no traceback, exactly one non-empty stderr line that contains every needle."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (
        f"exit code {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr[-3000:]}"
    line = lines[0]
    assert line.startswith("qcrd-bench: error: "), line
    assert len(line) < 1000, f"message too long ({len(line)} characters)"
    for needle in needles:
        assert needle in line, f"{needle!r} not in: {line}"
    return line


# ---- custom task: the spec YAML and its JSONL records --------------------------------------


def write_task(folder: Path, records: list | bytes, answer_type: str = "number", spec_extra: str = "") -> Path:
    """A custom task spec whose test file holds ``records`` (dicts, raw lines, or raw bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(records, bytes):
        data = records
    else:
        data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    (folder / "t.jsonl").write_bytes(data)
    spec = folder / "task.yaml"
    spec.write_text(
        f"name: bad\nanswer_type: {answer_type}\nfiles:\n  test: t.jsonl\n"
        f"fields:\n  choices: options\n  samples: s\n{spec_extra}"
    )
    return spec


def teach_custom(spec: Path, tmp_path: Path, *extra: str, runner=invoke):
    return runner(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(spec),
        "--teacher",
        "pool",
        "--split",
        "test",
        "--out",
        str(tmp_path / "pool.jsonl"),
        *extra,
    )


OK = {
    "question": "Ben has 11 stickers and gives away 4. How many are left?",
    "answer": 7,
    "s": ["11 - 4 = 7. The answer is 7."],
}
CHOICE = {"question": "Where do people go?", "options": ["race track", "populated areas"], "answer": "b"}

# (case id, records of t.jsonl, answer_type, what the one line must name)
RECORD_CASES = [
    ("malformed-json", [OK, '{"question": "2 + 2?", "answer": '], "number", ["t.jsonl:2", "not valid JSON"]),
    ("answer-is-a-list", [OK, {**OK, "answer": [7, 8]}], "number", ["t.jsonl:2", "key 'answer'", "got list"]),
    ("answer-is-an-object", [{**OK, "answer": {"value": 7}}], "number", ["t.jsonl:1", "key 'answer'", "got dict"]),
    ("answer-is-null", [{**OK, "answer": None}], "number", ["t.jsonl:1", "key 'answer'"]),
    ("answer-is-a-bool", [{**OK, "answer": True}], "number", ["t.jsonl:1", "key 'answer'", "bool"]),
    (
        "answer-is-not-a-number",
        [{**OK, "answer": "7 apples or 8"}],
        "number",
        ["t.jsonl:1", "key 'answer'", "not a valid number"],
    ),
    ("answer-is-NaN", ['{"question": "q?", "answer": NaN}'], "number", ["t.jsonl:1", "key 'answer'"]),
    (
        "answer-is-a-5000-digit-int",
        ['{"question": "q?", "answer": ' + "9" * 5000 + "}"],
        "number",
        ["t.jsonl:1", "not valid JSON"],
    ),
    (
        "answer-overflows-float",
        ['{"question": "q?", "answer": ' + "9" * 400 + "}"],
        "number",
        ["t.jsonl:1", "key 'answer'"],
    ),
    ("question-is-a-number", [OK, {**OK, "question": 42}], "number", ["t.jsonl:2", "key 'question'", "got int"]),
    ("question-is-empty", [{**OK, "question": "   "}], "number", ["t.jsonl:1", "key 'question'"]),
    ("missing-answer", [OK, OK, {"question": "2 + 2?"}], "number", ["t.jsonl:3", "missing key 'answer'"]),
    ("missing-question", [{"answer": 4}], "number", ["t.jsonl:1", "missing key 'question'"]),
    ("line-is-an-array", [OK, "[1, 2, 3]"], "number", ["t.jsonl:2", "expected a JSON object"]),
    ("line-is-a-number", ["17"], "number", ["t.jsonl:1", "expected a JSON object"]),
    (
        "nesting-too-deep",
        ['{"question": "q?", "answer": 1, "x": ' + "[" * 100000 + "]" * 100000 + "}"],
        "number",
        ["t.jsonl:1", "not valid JSON"],
    ),
    (
        "duplicate-id",
        [{**OK, "id": "q1"}, {**OK, "id": "q2"}, {**OK, "id": "q1"}],
        "number",
        ["t.jsonl:3", "key 'id'", "t.jsonl:1"],
    ),
    ("id-is-an-object", [{**OK, "id": {"n": 1}}], "number", ["t.jsonl:1", "key 'id'"]),
    ("samples-not-a-list", [{**OK, "s": "The answer is 7."}], "number", ["t.jsonl:1", "key 's'"]),
    ("samples-not-strings", [{**OK, "s": [7, 8]}], "number", ["t.jsonl:1", "key 's'"]),
    (
        "choice-answer-not-among-choices",
        [CHOICE, {**CHOICE, "answer": "the moon"}],
        "choice",
        ["t.jsonl:2", "key 'answer'", "the moon"],
    ),
    ("choice-letter-beyond-choices", [{**CHOICE, "answer": "e"}], "choice", ["t.jsonl:1", "key 'answer'"]),
    (
        "choices-not-a-list",
        [{**CHOICE, "options": "race track, populated areas"}],
        "choice",
        ["t.jsonl:1", "key 'options'"],
    ),
    (
        "27-choices",
        [{**CHOICE, "options": [f"place {i}" for i in range(27)]}],
        "choice",
        ["t.jsonl:1", "key 'options'"],
    ),
    (
        "nli-label-outside-label-set",
        [{"question": "P / H", "answer": "maybe"}],
        "label",
        ["t.jsonl:1", "key 'answer'", "maybe"],
    ),
    ("nli-label-id-out-of-range", [{"question": "P / H", "answer": 3}], "label", ["t.jsonl:1", "key 'answer'"]),
    ("nli-label-negative-id", [{"question": "P / H", "answer": -1}], "label", ["t.jsonl:1", "key 'answer'"]),
    (
        "nli-label-ambiguous-text",
        [{"question": "P / H", "answer": "not entailment"}],
        "label",
        ["t.jsonl:1", "key 'answer'"],
    ),
    (
        "yesno-not-yes-or-no",
        [{"question": "Is it?", "answer": "perhaps"}],
        "yesno",
        ["t.jsonl:1", "key 'answer'", "perhaps"],
    ),
    (
        "yesno-is-a-list",
        [{"question": "Is it?", "answer": ["yes"]}],
        "yesno",
        ["t.jsonl:1", "key 'answer'", "got list"],
    ),
    (
        "non-utf8-bytes",
        b'{"question": "Ben has 11 stickers.", "answer": 7}\n{"question": "caf\xe9?", "answer": 1}\n',
        "number",
        ["t.jsonl:2", "not UTF-8"],
    ),
    ("empty-file", b"", "number", ["t.jsonl", "no records"]),
    ("only-blank-lines", b"\n  \n\n", "number", ["t.jsonl", "no records"]),
    ("binary-garbage", bytes(range(256)) * 4, "number", ["t.jsonl:1"]),
]


@pytest.mark.parametrize(
    "records, answer_type, needles", [c[1:] for c in RECORD_CASES], ids=[c[0] for c in RECORD_CASES]
)
def test_bad_task_records(tmp_path, figures, records, answer_type, needles):
    spec = write_task(tmp_path / "task", records, answer_type)
    assert_one_clear_error(teach_custom(spec, tmp_path), *needles)
    figures("bad_inputs_tried")


def test_gold_answers_are_read_exactly(tmp_path):
    """Control: gold answers in their documented forms load whole and as meant. A choice given
    by its text is that choice, even when the text starts like a letter ("a dog" is not (a))."""
    from qcrd_plugin.tasks import _custom, read_spec

    records = [
        {"question": "Which barks?", "options": ["cat", "a dog"], "answer": "a dog"},
        {"question": "Which meows?", "options": ["cat", "a dog"], "answer": "(A)"},
        {"question": "Which meows?", "options": ["cat", "a dog"], "answer": "Cat."},
    ]
    data = _custom(read_spec(write_task(tmp_path / "choice", records, "choice")))
    assert [q.answer for q in data.questions["test"]] == ["b", "a", "a"]
    records = [{"question": "q?", "answer": a} for a in (7, 2.5, "1,200", "$84 / 2", "7.")]
    data = _custom(read_spec(write_task(tmp_path / "number", records)))
    assert [q.answer for q in data.questions["test"]] == ["7", "2.5", "1200", "42", "7"]
    records = [{"question": "P / H", "answer": a} for a in ("Entailment", "neutral.", 2)]
    data = _custom(read_spec(write_task(tmp_path / "label", records, "label")))
    assert [q.answer for q in data.questions["test"]] == ["entailment", "neutral", "contradiction"]


def test_huge_line_in_task_data(tmp_path, figures):
    """Policy: a line over MAX_LINE_BYTES (4 MiB) is refused, naming file and line."""
    data = json.dumps(OK).encode() + b"\n" + b'{"question": "' + b"a" * HUGE_LINE + b'", "answer": 1}\n'
    spec = write_task(tmp_path / "task", data)
    assert_one_clear_error(teach_custom(spec, tmp_path), "t.jsonl:2", "longer than 4 MiB")
    figures("bad_inputs_tried")


def test_huge_line_is_refused_without_being_loaded(tmp_path):
    """The reader stops after MAX_LINE_BYTES + 1 bytes of a 20 MB line: peak memory stays far
    below the line's size."""
    path = tmp_path / "huge.jsonl"
    path.write_bytes(b'{"question": "' + b"a" * HUGE_LINE + b'"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(UserInputError, match=r"huge\.jsonl:1: line longer than"):
            read_jsonl(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_LINE_BYTES < HUGE_LINE


def test_line_of_exactly_the_limit_is_accepted(tmp_path):
    prefix, suffix = b'{"question": "', b'", "answer": 1}'
    line = prefix + b"a" * (MAX_LINE_BYTES - len(prefix) - len(suffix)) + suffix
    (tmp_path / "edge.jsonl").write_bytes(line + b"\n" + line)  # the last line has no newline
    assert [n for n, _ in read_jsonl(tmp_path / "edge.jsonl")] == [1, 2]


def test_bom_and_crlf_are_read_not_refused(tmp_path):
    """A UTF-8 byte-order mark and Windows line ends are harmless: read, not refused or skipped."""
    data = b"\xef\xbb\xbf" + json.dumps(OK).encode() + b"\r\n" + json.dumps({**OK, "answer": 8}).encode() + b"\r\n"
    (tmp_path / "win.jsonl").write_bytes(data)
    assert [r["answer"] for _, r in read_jsonl(tmp_path / "win.jsonl")] == [7, 8]


SPEC_OK = "name: bad\nanswer_type: number\nfiles:\n  test: t.jsonl\n"
# (case id, spec text or bytes, what the one line must name)
SPEC_CASES = [
    (
        "yaml-syntax-error",
        "name: bad\nanswer_type: number\nfiles: {test: t.jsonl\n",
        ["task.yaml", "line", "invalid YAML"],
    ),
    ("yaml-tab-indent", "name: bad\nfiles:\n\ttest: t.jsonl\n", ["task.yaml", "line 3", "invalid YAML"]),
    ("spec-is-a-list", "- name: bad\n- answer_type: number\n", ["task.yaml", "expected a mapping"]),
    ("spec-is-empty", "", ["task.yaml", "expected a mapping"]),
    ("unknown-key", SPEC_OK + "answers: answer\n", ["task.yaml", "unknown key 'answers'"]),
    ("unknown-field", SPEC_OK + "fields:\n  rationle: r\n", ["task.yaml", "fields.rationle"]),
    ("missing-answer-type", "name: bad\nfiles:\n  test: t.jsonl\n", ["task.yaml", "missing key 'answer_type'"]),
    ("bad-answer-type", SPEC_OK.replace("number", "numbr"), ["task.yaml", "key 'answer_type'", "numbr"]),
    ("answer-type-is-a-list", SPEC_OK.replace("number", "[number]"), ["task.yaml", "key 'answer_type'"]),
    ("name-is-a-mapping", SPEC_OK.replace("name: bad", "name: {x: 1}"), ["task.yaml", "key 'name'"]),
    ("files-is-a-list", "name: bad\nanswer_type: number\nfiles: [t.jsonl]\n", ["task.yaml", "key 'files'"]),
    (
        "file-path-is-a-number",
        "name: bad\nanswer_type: number\nfiles:\n  test: 5\n",
        ["task.yaml", "key 'files.test'"],
    ),
    ("unknown-split", SPEC_OK + "  dev: d.jsonl\n", ["task.yaml", "key 'files'"]),
    ("no-test-file", "name: bad\nanswer_type: number\nfiles:\n  train: t.jsonl\n", ["task.yaml", "key 'files.test'"]),
    ("fields-is-a-list", SPEC_OK + "fields: [question, answer]\n", ["task.yaml", "key 'fields'"]),
    ("field-name-is-a-number", SPEC_OK + "fields:\n  answer: 3\n", ["task.yaml", "key 'fields.answer'"]),
    ("unsupported-spec-version", "task_spec: 2\n" + SPEC_OK, ["task.yaml", "key 'task_spec'"]),
    ("duplicate-key", SPEC_OK + "answer_type: text\n", ["task.yaml", "line 5", "'answer_type' given twice"]),
    (
        "non-utf8-yaml",
        b"name: caf\xe9\nanswer_type: number\nfiles:\n  test: t.jsonl\n",
        ["task.yaml", "line 1", "not UTF-8"],
    ),
    (
        "python-object-tag",
        "name: !!python/object/apply:os.system ['touch PWNED']\nanswer_type: number\nfiles:\n  test: t.jsonl\n",
        ["task.yaml", "line 1", "python/object"],
    ),
    ("huge-yaml-file", "description: '" + "a" * (2 * 2**20) + "'\n" + SPEC_OK, ["task.yaml", "limit"]),
    (
        "data-file-missing",
        SPEC_OK.replace("t.jsonl", "missing.jsonl"),
        ["task.yaml", "key 'files.test'", "missing.jsonl"],
    ),
]


@pytest.mark.parametrize("text, needles", [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_bad_task_spec(tmp_path, figures, text, needles):
    folder = tmp_path / "task"
    write_task(folder, [OK])
    spec = folder / "task.yaml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    proc = teach_custom(spec, tmp_path)
    assert_one_clear_error(proc, *needles)
    assert not (Path.cwd() / "PWNED").exists() and not (folder / "PWNED").exists()
    figures("bad_inputs_tried")


def test_spec_that_is_a_folder(tmp_path, figures):
    # Through the config key (``--spec`` itself is a click.Path that refuses folders up front).
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "-o",
        f"task.spec={tmp_path}",
        "--teacher",
        "pool",
        "--out",
        str(tmp_path / "p.jsonl"),
    )
    assert_one_clear_error(proc, str(tmp_path), "cannot read")
    figures("bad_inputs_tried")


def test_task_spec_and_data_errors_on_the_real_stderr(tmp_path, figures):
    """The same checks against a real subprocess (imports, logging and warnings included)."""
    spec = write_task(tmp_path / "task", [OK, {**OK, "answer": [7]}])
    assert_one_clear_error(teach_custom(spec, tmp_path, runner=cli), "t.jsonl:2", "key 'answer'")
    figures("bad_inputs_tried")


# ---- teacher pools (teacher.pool=...) -------------------------------------------------------

SAMPLE = {"rationale": "11 - 4 = 7. The answer is 7.", "answer": 7.0, "error": "", "teacher": "t"}
POOL_OK = {"format": "qcrd-pool/1", "id": "shop-100", "question": "q", "gold": "7", "samples": [SAMPLE]}
# (case id, pool lines or bytes, what the one line must name)
POOL_CASES = [
    ("malformed-json", [POOL_OK, '{"id": "shop-101", "samples": ['], ["pool.jsonl:2", "not valid JSON"]),
    ("line-is-an-array", [POOL_OK, "[1, 2]"], ["pool.jsonl:2", "expected a JSON object"]),
    (
        "missing-samples",
        [{k: v for k, v in POOL_OK.items() if k != "samples"}],
        ["pool.jsonl:1", "missing key 'samples'"],
    ),
    ("missing-id", [{k: v for k, v in POOL_OK.items() if k != "id"}], ["pool.jsonl:1", "missing key 'id'"]),
    ("samples-is-a-string", [{**POOL_OK, "samples": "The answer is 7."}], ["pool.jsonl:1", "key 'samples'"]),
    ("sample-is-a-string", [{**POOL_OK, "samples": ["The answer is 7."]}], ["pool.jsonl:1", "key 'samples[0]'"]),
    (
        "sample-without-rationale",
        [{**POOL_OK, "samples": [SAMPLE, {"answer": 7}]}],
        ["pool.jsonl:1", "samples[1]", "'rationale'"],
    ),
    (
        "rationale-is-a-number",
        [{**POOL_OK, "samples": [{**SAMPLE, "rationale": 7}]}],
        ["pool.jsonl:1", "samples[0].rationale"],
    ),
    (
        "answer-is-a-list",
        [{**POOL_OK, "samples": [{**SAMPLE, "answer": [7]}]}],
        ["pool.jsonl:1", "samples[0].answer", "got list"],
    ),
    (
        "answer-is-NaN",
        ['{"id": "shop-100", "question": "q", "gold": "7", "samples": [{"rationale": "r", "answer": NaN}]}'],
        ["pool.jsonl:1", "samples[0].answer"],
    ),
    ("gold-is-a-list", [{**POOL_OK, "gold": [7]}], ["pool.jsonl:1", "key 'gold'"]),
    ("question-is-a-number", [{**POOL_OK, "question": 7}], ["pool.jsonl:1", "key 'question'"]),
    ("id-is-a-list", [{**POOL_OK, "id": ["shop-100"]}], ["pool.jsonl:1", "key 'id'"]),
    (
        "unknown-format-version",
        [{**POOL_OK, "format": "qcrd-pool/9"}],
        ["pool.jsonl:1", "key 'format'", "qcrd-pool/9"],
    ),
    ("duplicate-id", [POOL_OK, {**POOL_OK, "id": "shop-101"}, POOL_OK], ["pool.jsonl:3", "key 'id'", "line 1"]),
    ("empty-file", b"", ["pool.jsonl", "empty pool"]),
    ("non-utf8-bytes", json.dumps(POOL_OK).encode() + b'\n{"id": "\xff\xfe"}\n', ["pool.jsonl:2", "not UTF-8"]),
    (
        "huge-line",
        json.dumps(POOL_OK).encode() + b"\n" + b'{"id": "' + b"x" * HUGE_LINE + b'"}\n',
        ["pool.jsonl:2", "longer than 4 MiB"],
    ),
    ("gzip-bytes-not-jsonl", gzip.compress(json.dumps(POOL_OK).encode()), ["pool.jsonl:1"]),
]


def write_pool(path: Path, lines: list | bytes) -> Path:
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in lines))
    return path


def teach_with_pool(pool: Path, tmp_path: Path, runner=invoke):
    return teach_custom(SHOP_SPEC, tmp_path, "-o", f"teacher.pool={pool}", "-k", "1", "--limit", "2", runner=runner)


@pytest.mark.parametrize("lines, needles", [c[1:] for c in POOL_CASES], ids=[c[0] for c in POOL_CASES])
def test_bad_teacher_pool(tmp_path, figures, lines, needles):
    pool = write_pool(tmp_path / "pool.jsonl", lines)
    proc = teach_with_pool(pool, tmp_path / "out")
    assert_one_clear_error(proc, *needles)
    figures("bad_inputs_tried")


def test_missing_pool_file_and_pool_folder(tmp_path, figures):
    assert_one_clear_error(teach_with_pool(tmp_path / "nope.jsonl", tmp_path), "nope.jsonl", "not found")
    figures("bad_inputs_tried")
    assert_one_clear_error(teach_with_pool(tmp_path, tmp_path), str(tmp_path), "not found")
    figures("bad_inputs_tried")


def test_good_pool_is_read_whole(tmp_path):
    """Control: a pool with unknown extra keys (ignored, per the policy) is accepted and no
    question is dropped."""
    # the task's own question text and gold: a pool of another version of the task is refused
    records = [
        json.loads(line) for line in (SHOP_SPEC.parent / "shop_math" / "test.jsonl").read_text().splitlines()[:2]
    ]
    entries = [
        {
            **POOL_OK,
            "id": r["id"],
            "question": r["question"],
            "gold": str(r["answer"]),
            "note": "extra keys are ignored",
        }
        for r in records
    ]
    pool = write_pool(tmp_path / "pool.jsonl", entries)
    proc = teach_with_pool(pool, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "2 questions" in proc.stdout


def test_bad_pool_on_the_real_stderr(tmp_path, figures):
    pool = write_pool(tmp_path / "pool.jsonl", [POOL_OK, {**POOL_OK, "id": "shop-101", "samples": [{"answer": 7}]}])
    assert_one_clear_error(teach_with_pool(pool, tmp_path / "out", runner=cli), "pool.jsonl:2", "'rationale'")
    figures("bad_inputs_tried")


# ---- run configs: qcrd-bench config / run --config / -o KEY=VALUE ---------------------------

ALIAS_BOMB = (
    "evaluation:\n  tasks: [&a0 [x, x, x, x, x, x, x, x, x, x]"
    + "".join(f", &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10))
    + "]\n"
)
# (case id, config text or bytes, what the one line must name)
CONFIG_CASES = [
    ("yaml-syntax-error", "training:\n  rounds: [1, 2\n", ["c.yaml", "line 3", "invalid YAML"]),
    ("yaml-bad-indent", "training:\n rounds: 1\n  seed: 2\n", ["c.yaml", "line 3", "invalid YAML"]),
    ("unknown-key", "training:\n  roundz: 2\n", ["c.yaml", "unknown key 'training.roundz'"]),
    ("unknown-section", "trainer:\n  rounds: 2\n", ["c.yaml", "unknown key 'trainer'"]),
    ("wrong-type-string-for-int", "training:\n  rounds: three\n", ["c.yaml", "key 'training.rounds'", "expected int"]),
    ("wrong-type-float-for-int", "training:\n  rounds: 1.5\n", ["c.yaml", "key 'training.rounds'", "expected int"]),
    ("wrong-type-bool-for-int", "training:\n  rounds: yes\n", ["c.yaml", "key 'training.rounds'", "bool"]),
    ("wrong-type-list-for-str", "name: [a, b]\n", ["c.yaml", "key 'name'", "expected str"]),
    ("null-value", "method:\n  beta: null\n", ["c.yaml", "key 'method.beta'"]),
    ("out-of-range-below", "training:\n  rounds: 0\n", ["c.yaml", "key 'training.rounds'", "below the minimum 1"]),
    ("out-of-range-above", "method:\n  alpha: 1.5\n", ["c.yaml", "key 'method.alpha'", "above the maximum 1.0"]),
    ("not-one-of-the-choices", "method:\n  name: magic\n", ["c.yaml", "key 'method.name'", "magic"]),
    ("nan", "training:\n  learning_rate: .nan\n", ["c.yaml", "key 'training.learning_rate'", "finite"]),
    ("infinity", "method:\n  beta: .inf\n", ["c.yaml", "key 'method.beta'", "finite"]),
    ("top-level-is-a-list", "- training\n- rounds\n", ["c.yaml", "expected a mapping"]),
    ("top-level-is-a-scalar", "just some text\n", ["c.yaml", "expected a mapping"]),
    ("section-is-a-scalar", "training: 3\n", ["c.yaml", "key 'training'", "expected a mapping"]),
    ("section-is-a-list", "training: [1, 2]\n", ["c.yaml", "key 'training'", "expected a mapping"]),
    (
        "duplicate-key",
        "training:\n  rounds: 2\n  seed: 1\n  rounds: 5\n",
        ["c.yaml", "line 4", "'rounds' given twice (first on line 2)"],
    ),
    ("non-utf8-yaml", b"name: run\nmethod:\n  name: caf\xe9\n", ["c.yaml", "line 3", "not UTF-8"]),
    (
        "python-object-apply-tag",
        "name: !!python/object/apply:os.system ['touch PWNED']\n",
        ["c.yaml", "line 1", "python/object/apply"],
    ),
    (
        "python-object-tag",
        "!!python/object:qcrd_plugin.config.RunConfig {name: x}\n",
        ["c.yaml", "line 1", "python/object"],
    ),
    ("python-name-tag", "name: !!python/name:os.system\n", ["c.yaml", "line 1", "python/name"]),
    ("int-over-4300-digits", "training:\n  seed: " + "9" * 5000 + "\n", ["c.yaml", "invalid YAML"]),
    ("alias-bomb", ALIAS_BOMB, ["c.yaml", "key 'evaluation.tasks'", "list of strings"]),
    ("huge-file", "name: run\n# " + "x" * (2 * 2**20) + "\n", ["c.yaml", "limit"]),
    ("binary-garbage", bytes(range(256)), ["c.yaml", "not UTF-8"]),
]


@pytest.mark.parametrize("text, needles", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(tmp_path, figures, text, needles):
    config = tmp_path / "c.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_one_clear_error(cli("config", "--config", str(config)), *needles)
    assert not (Path.cwd() / "PWNED").exists()
    figures("bad_inputs_tried")


def test_bad_config_stops_run_before_training(tmp_path, figures):
    """``run`` checks its config before anything heavy: no run folder, no torch import."""
    config = tmp_path / "c.yaml"
    config.write_text(f"output_dir: {tmp_path / 'runs'}\ntraining:\n  steps_per_round: -5\n")
    assert_one_clear_error(
        cli("run", "--config", str(config)), "c.yaml", "key 'training.steps_per_round'", "below the minimum"
    )
    assert not (tmp_path / "runs").exists()
    figures("bad_inputs_tried")
    assert_one_clear_error(cli("run", "--config", str(tmp_path / "missing.yaml")), "missing.yaml", "not found")
    figures("bad_inputs_tried")


OVERRIDE_CASES = [
    ("no-equals-sign", "training.rounds", ["override 'training.rounds'", "KEY=VALUE"]),
    ("value-not-yaml", "training.rounds=[1", ["override 'training.rounds=[1'", "not valid YAML"]),
    ("unknown-key", "training.roundz=2", ["unknown key 'training.roundz'"]),
    ("into-a-scalar", "name.first=x", ["key 'name'"]),
    ("python-tag", "name=!!python/object/apply:os.system ['touch PWNED']", ["not valid YAML", "python/object/apply"]),
    ("duplicate-key-in-value", "evaluation={limit: 1, limit: 2}", ["not valid YAML", "given twice"]),
    ("out-of-range", "teacher.samples=65", ["key 'teacher.samples'", "above the maximum 64"]),
    ("cross-key", "task.min_steps=5", ["key 'task.min_steps'", "exceeds task.max_steps"]),
]


@pytest.mark.parametrize("override, needles", [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES])
def test_bad_override(figures, override, needles):
    assert_one_clear_error(cli("config", "-o", override), *needles)
    assert not (Path.cwd() / "PWNED").exists()
    figures("bad_inputs_tried")


# ---- release layouts under the data directory (qcrd_plugin.sources) ------------------------


def gsm8k_layout(root: Path) -> Path:
    folder = root / "grade_school_math" / "grade_school_math" / "data"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        rows = [
            {
                "question": f"Tom has {i} apples and buys 2. How many now?",
                "answer": f"{i} + 2 = <<{i}+2={i + 2}>>{i + 2}\n#### {i + 2}",
            }
            for i in range(3)
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def mcc_kd_layout(root: Path) -> Path:
    folder = root / "mcc_kd" / "data" / "SVAMP"
    folder.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        rows = [
            {
                "instruction": f"Tom has {i} apples and buys 2. How many now?",
                "label": str(i + 2),
                "output": [f"{i} + 2 = {i + 2}"] * 2 if split == "train" else "",
            }
            for i in range(3)
        ]
        (folder / f"{split}.json").write_text(json.dumps(rows, indent=1))
    return folder


def dsbs_layout(root: Path) -> Path:
    base = root / "distilling_step_by_step" / "datasets"
    rows = {
        "svamp": [
            {"input": f"Tom has {i} apples and buys 2. How many now?", "label": f"( {i}.0 + 2.0 )"} for i in range(3)
        ],
        "cqa": [
            {
                "id": f"c{i}",
                "question": "Where do people go?",
                "choices": ["race track", "populated areas", "desert", "apartment", "roadblock"],
                "answer": "populated areas",
                "abstractive_explanation": "People are in populated areas.",
            }
            for i in range(3)
        ],
        "anli1": [
            {
                "uid": f"a{i}",
                "premise": "A man sleeps.",
                "hypothesis": "A man is awake.",
                "label": 2,
                "reason": "Sleeping is not awake.",
            }
            for i in range(3)
        ],
    }
    for family, records in rows.items():
        (base / family / "llm").mkdir(parents=True)
        for split in ("valid", "test") if family == "anli1" else ("train", "test"):
            (base / family / f"{family}_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in records))
            (base / family / "llm" / f"{split}_CoT_0.json").write_text(
                json.dumps(["It is so. The answer is 2."] * len(records))
            )
    return base


def mentor_kd_layout(root: Path) -> Path:
    folder = root / "mentor_kd" / "data" / "main"
    folder.mkdir(parents=True)
    train = [
        {"input": f"Is {i} even?", "chain": "It is. So the answer is yes.", "answer": "Yes", "initial_correct": True}
        for i in range(3)
    ]
    (folder / "strategy_qa_3_train.json").write_text(json.dumps(train))
    (folder / "strategy_qa_test.json").write_text(json.dumps([{"input": "Is 4 even?", "answer": "Yes"}]))
    return folder


EIT_CQA_TEACHERS = ["csqa_gemini_level1_ranked"] + [f"csqa_llama_level{i}_ranked" for i in range(1, 4)]


def eit_cqa_layout(root: Path, gold: list[dict], teacher_rows: list[dict]) -> Path:
    base = root / "eit_distilling_cot_reasoning"
    (base / "data").mkdir(parents=True)
    (base / "Evaluation" / "reasoning_eval").mkdir(parents=True)
    (base / "data" / "commonsenseQA_onlyans.json").write_text(json.dumps(gold))
    for name in EIT_CQA_TEACHERS:
        (base / "data" / f"{name}.json").write_text(json.dumps(teacher_rows))
    test = [{"instruction": "Where is money kept? Answer Choices:\nA. bank\nB. library\n", "output": "", "label": "A"}]
    (base / "Evaluation" / "reasoning_eval" / "csqa_test.json").write_text(json.dumps(test))
    return base


def cqa_instruction(n: int) -> str:
    return f"Q: Where do {n} people go? Answer choices: A: race track, B: populated areas, C: the desert"


def prepare(root: Path, task: str, source: str):
    return cli("data", "prepare", "--task", task, "--source", source, "--data-dir", str(root), "--check")


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def corrupt_line(path: Path, number: int, text: str | bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = (text if isinstance(text, bytes) else text.encode()) + b"\n"
    path.write_bytes(b"".join(lines))


def edit_records(path: Path, index: int, change: dict | None = None, drop: str | None = None, replace=None) -> None:
    rows = json.loads(path.read_text())
    if replace is not None:
        rows[index] = replace
    else:
        rows[index].update(change or {})
        if drop:
            del rows[index][drop]
    path.write_text(json.dumps(rows))


def test_good_layouts_prepare_cleanly(tmp_path):
    """Control: the hand-written layouts the cases below corrupt are read whole."""
    gsm8k_layout(tmp_path), mcc_kd_layout(tmp_path), dsbs_layout(tmp_path), mentor_kd_layout(tmp_path)
    for task, source, questions in (
        ("gsm8k", "gsm8k", 3),
        ("svamp", "mcc_kd", 3),
        ("svamp", "dsbs", 3),
        ("cqa", "dsbs", 3),
        ("anli1", "dsbs", 3),
        ("strategyqa", "mentor_kd", 3),
    ):
        proc = prepare(tmp_path, task, source)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
        rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(task)]
        assert rows and all(int(row[3]) in (questions, 1) for row in rows), proc.stdout


def _on(layout, task: str, source: str):
    """Case builders on one release layout: ``corrupt(path_fn)`` makes a build(root) that lays the
    release out with ``layout(root)``, lets ``path_fn(folder)`` corrupt it, and names (task, source)."""

    def corrupt(path_fn):
        def build(root: Path):
            path_fn(layout(root))
            return task, source

        return build

    return corrupt


_gsm8k = _on(gsm8k_layout, "gsm8k", "gsm8k")
_mcc = _on(mcc_kd_layout, "svamp", "mcc_kd")
_mentor = _on(mentor_kd_layout, "strategyqa", "mentor_kd")


def _dsbs(family: str, path_fn):
    return _on(lambda root: dsbs_layout(root) / family, family, "dsbs")(path_fn)


def _gz(folder: Path, data: bytes) -> None:
    (folder / "train.jsonl").unlink()
    (folder / "train.jsonl.gz").write_bytes(data)


# (case id, build(root) -> (task, source), what the one line must name)
LAYOUT_CASES = [
    (
        "gsm8k-malformed-json",
        _gsm8k(lambda f: corrupt_line(f / "train.jsonl", 2, '{"question": "x", "answer":')),
        ["train.jsonl:2", "not valid JSON"],
    ),
    (
        "gsm8k-answer-is-a-list",
        _gsm8k(lambda f: corrupt_line(f / "train.jsonl", 3, '{"question": "x", "answer": ["#### 4"]}')),
        ["train.jsonl:3", "key 'answer'", "expected a string"],
    ),
    (
        "gsm8k-question-is-a-number",
        _gsm8k(lambda f: corrupt_line(f / "test.jsonl", 1, '{"question": 12, "answer": "#### 4"}')),
        ["test.jsonl:1", "key 'question'"],
    ),
    (
        "gsm8k-missing-answer",
        _gsm8k(lambda f: corrupt_line(f / "train.jsonl", 2, '{"question": "x"}')),
        ["train.jsonl:2", "missing key 'answer'"],
    ),
    (
        "gsm8k-no-final-answer",
        _gsm8k(lambda f: corrupt_line(f / "train.jsonl", 1, '{"question": "x", "answer": "it is 4"}')),
        ["train.jsonl:1", "key 'answer'", "####"],
    ),
    (
        "gsm8k-final-answer-not-a-number",
        _gsm8k(lambda f: corrupt_line(f / "train.jsonl", 1, '{"question": "x", "answer": "#### four"}')),
        ["train.jsonl:1", "key 'answer'", "not a number"],
    ),
    (
        "gsm8k-line-is-an-array",
        _gsm8k(lambda f: corrupt_line(f / "train.jsonl", 2, "[1, 2]")),
        ["train.jsonl:2", "expected a JSON object"],
    ),
    (
        "gsm8k-non-utf8",
        _gsm8k(lambda f: corrupt_line(f / "train.jsonl", 2, b'{"question": "caf\xe9", "answer": "#### 4"}')),
        ["train.jsonl:2", "not UTF-8"],
    ),
    (
        "gsm8k-huge-line",
        _gsm8k(lambda f: corrupt_line(f / "train.jsonl", 2, b'{"question": "' + b"a" * HUGE_LINE + b'"}')),
        ["train.jsonl:2", "longer than 4 MiB"],
    ),
    ("gsm8k-empty-file", _gsm8k(lambda f: (f / "test.jsonl").write_text("")), ["test.jsonl", "no records"]),
    ("gsm8k-gz-not-gzip", _gsm8k(lambda f: _gz(f, b"this is not gzip data\n")), ["train.jsonl.gz", "cannot read"]),
    (
        "gsm8k-gz-truncated",
        _gsm8k(lambda f: _gz(f, gzip.compress((f / "train.jsonl").read_bytes() * 50)[:60])),
        ["train.jsonl.gz", "cannot read"],
    ),
    (
        "gsm8k-file-is-a-folder",
        _gsm8k(lambda f: ((f / "test.jsonl").unlink(), (f / "test.jsonl").mkdir())),
        ["test.jsonl", "cannot read"],
    ),
    (
        "mcc-kd-truncated-json",
        _mcc(lambda f: (f / "dev.json").write_text((f / "dev.json").read_text()[:-40])),
        ["dev.json:", "not valid JSON"],
    ),
    (
        "mcc-kd-not-an-array",
        _mcc(lambda f: (f / "train.json").write_text('{"instruction": "x", "label": "1"}')),
        ["train.json", "expected a JSON array"],
    ),
    (
        "mcc-kd-label-not-a-number",
        _mcc(lambda f: edit_records(f / "train.json", 1, {"label": "seven"})),
        ["train.json: record 2", "key 'label'", "not a number"],
    ),
    (
        "mcc-kd-label-is-null",
        _mcc(lambda f: edit_records(f / "test.json", 2, {"label": None})),
        ["test.json: record 3", "key 'label'"],
    ),
    (
        "mcc-kd-missing-instruction",
        _mcc(lambda f: edit_records(f / "train.json", 0, drop="instruction")),
        ["train.json: record 1", "missing key 'instruction'"],
    ),
    (
        "mcc-kd-record-is-a-string",
        _mcc(lambda f: edit_records(f / "dev.json", 1, replace="just text")),
        ["dev.json: record 2", "JSON object"],
    ),
    (
        "mcc-kd-outputs-not-strings",
        _mcc(lambda f: edit_records(f / "train.json", 0, {"output": [1, 2]})),
        ["train.json: record 1", "key 'output'"],
    ),
    ("mcc-kd-empty-array", _mcc(lambda f: (f / "test.json").write_text("[]")), ["test.json", "no records"]),
    (
        "dsbs-svamp-label-not-arithmetic",
        _dsbs(
            "svamp", lambda f: corrupt_line(f / "svamp_train.json", 2, '{"input": "x", "label": "__import__(\'os\')"}')
        ),
        ["svamp_train.json:2", "key 'label'", "arithmetic"],
    ),
    (
        "dsbs-svamp-completion-not-a-string",
        _dsbs("svamp", lambda f: (f / "llm" / "train_CoT_0.json").write_text('["ok", {"text": 1}, "ok"]')),
        ["train_CoT_0.json: record 2", "completion string"],
    ),
    (
        "dsbs-cqa-answer-not-among-choices",
        _dsbs(
            "cqa",
            lambda f: corrupt_line(
                f / "cqa_test.json",
                2,
                json.dumps({"question": "Where?", "choices": ["park", "school"], "answer": "moon"}),
            ),
        ),
        ["cqa_test.json:2", "key 'answer'", "not one of the choices"],
    ),
    (
        "dsbs-cqa-choices-not-a-list",
        _dsbs(
            "cqa",
            lambda f: corrupt_line(
                f / "cqa_train.json",
                1,
                json.dumps({"question": "Where?", "choices": "park, school", "answer": "park"}),
            ),
        ),
        ["cqa_train.json:1", "key 'choices'"],
    ),
    (
        "dsbs-anli-label-outside-label-set",
        _dsbs(
            "anli1",
            lambda f: corrupt_line(
                f / "anli1_valid.json", 3, json.dumps({"premise": "p", "hypothesis": "h", "label": 3})
            ),
        ),
        ["anli1_valid.json:3", "key 'label'", "NLI label"],
    ),
    (
        "dsbs-anli-label-negative",
        _dsbs(
            "anli1",
            lambda f: corrupt_line(
                f / "anli1_test.json", 1, json.dumps({"premise": "p", "hypothesis": "h", "label": -1})
            ),
        ),
        ["anli1_test.json:1", "key 'label'"],
    ),
    (
        "dsbs-anli-label-a-word",
        _dsbs(
            "anli1",
            lambda f: corrupt_line(
                f / "anli1_test.json", 2, json.dumps({"premise": "p", "hypothesis": "h", "label": "maybe"})
            ),
        ),
        ["anli1_test.json:2", "key 'label'"],
    ),
    (
        "mentor-kd-yesno-not-yes-or-no",
        _mentor(lambda f: edit_records(f / "strategy_qa_test.json", 0, {"answer": "perhaps"})),
        ["strategy_qa_test.json: record 1", "key 'answer'", "yesno"],
    ),
    (
        "mentor-kd-chain-is-a-number",
        _mentor(lambda f: edit_records(f / "strategy_qa_3_train.json", 2, {"chain": 5})),
        ["strategy_qa_3_train.json: record 3", "key 'chain'"],
    ),
]


@pytest.mark.parametrize("build, needles", [c[1:] for c in LAYOUT_CASES], ids=[c[0] for c in LAYOUT_CASES])
def test_bad_release_layout(tmp_path, figures, build, needles):
    task, source = build(tmp_path)
    assert_one_clear_error(prepare(tmp_path, task, source), *needles)
    figures("bad_inputs_tried")


def test_data_dir_without_the_layout(tmp_path, figures):
    assert_one_clear_error(prepare(tmp_path, "gsm8k", "gsm8k"), "train.jsonl", "not found", "--data-dir")
    figures("bad_inputs_tried")


def test_eit_repeats_are_a_counted_skip(tmp_path, figures):
    """Policy: a question EIT's gold file repeats is skipped (one id per question) and counted;
    so is a teacher rationale whose question is not in the gold file. Nothing else is dropped."""
    gold = [{"instruction": cqa_instruction(n), "output": "B"} for n in range(3)]
    gold.append(dict(gold[1]))  # the repeat
    teachers = [{"instruction": cqa_instruction(n), "output": "People are there. The answer is B"} for n in range(3)]
    teachers.append({"instruction": cqa_instruction(99), "output": "A question nobody asked. The answer is A"})
    eit_cqa_layout(tmp_path, gold, teachers)
    proc = prepare(tmp_path, "cqa", "eit")
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    assert (
        "1 repeated question(s) in commonsenseQA_onlyans.json skipped" in proc.stdout and "3 of 4 kept" in proc.stdout
    )
    assert "train: 4 teacher rationale(s) skipped" in proc.stdout  # one per teacher file
    train = next(line.split() for line in proc.stdout.splitlines() if line.startswith("cqa") and " train " in line)
    assert train[3:6] == ["3", "3", "12"]  # questions, pooled, samples: 3 x 4 teachers, none lost
    figures("bad_inputs_tried", 2)


def test_eit_gold_answer_outside_choices(tmp_path, figures):
    gold = [{"instruction": cqa_instruction(n), "output": "B"} for n in range(2)] + [
        {"instruction": cqa_instruction(2), "output": "Z"}
    ]
    eit_cqa_layout(tmp_path, gold, [])
    assert_one_clear_error(
        prepare(tmp_path, "cqa", "eit"), "commonsenseQA_onlyans.json: record 3", "key 'output'", "choice"
    )
    figures("bad_inputs_tried")


# ---- issue 15: flags and paths a user gets wrong (checked before any sampling or training) ----

RUNS = ["--output-dir", "{tmp}/runs", "--quiet"]
# (case id, the command line ({tmp}: the test's folder, which holds a file "a_file"), what the one line must name)
EARLY_CASES = [
    (
        "teach-negative-limit",
        ["teach", "--task", "synth", "--limit", "-1", "--out", "{tmp}/p.jsonl"],
        ["'--limit'", "-1"],
    ),
    ("config-is-a-folder", ["run", "--config", "{tmp}"], ["'--config'", "is a directory"]),
    ("unknown-flag", ["run", "--roundz", "2"], ["'--roundz'"]),
    ("seed-overflow", ["run", "--seed", "9" * 23, *RUNS], ["key 'training.seed'", "above the maximum 4294967295"]),
    ("name-300-characters", ["run", "--name", "n" * 300, *RUNS], ["key 'name'", "300 bytes", "at most 200"]),
    (
        "output-dir-is-a-file",
        ["run", "--output-dir", "{tmp}/a_file", "--quiet"],
        ["output_dir", "a_file", "Not a directory"],
    ),
    (
        "teach-out-under-a-file",
        ["teach", "--task", "synth", "--out", "{tmp}/a_file/p.jsonl"],
        ["--out", "a_file is a file"],
    ),
    (
        "teach-cache-is-a-folder",
        ["teach", "--task", "synth", "--out", "{tmp}/p.jsonl", "--cache", "{tmp}"],
        ["--cache", "is a folder"],
    ),
    (
        "lora-target-not-in-the-student",
        ["run", "-o", "student.lora_rank=4", "-o", "student.lora_target_modules=[nope]", *RUNS],
        ["key 'student.lora_target_modules'", "nope"],
    ),
    (
        "unknown-evaluation-task",
        ["run", "-o", "evaluation.tasks=qcrd_synth,gsm8kk", *RUNS],  # lm-eval's comma list, a misspelt registry name
        ["key 'evaluation.tasks'", "'gsm8kk'", "did you mean gsm8k"],
    ),
    (
        "pretrained-folder-missing",
        ["run", "-o", "student.pretrained=/missing/folder", *RUNS],
        ["key 'student.pretrained'", "/missing/folder not found"],
    ),
    (
        "pretrained-hub-id-offline",
        ["run", "-o", "student.pretrained=someorg/somemodel", *RUNS],
        ["key 'student.pretrained'", "someorg/somemodel", "network"],
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, needles", [c[1:] for c in EARLY_CASES], ids=[c[0] for c in EARLY_CASES])
def test_a_mistaken_flag_or_path_stops_before_any_work(tmp_path, figures, args, needles):
    (tmp_path / "a_file").write_text("x")
    assert_one_clear_error(cli(*(a.format(tmp=tmp_path) for a in args)), *needles)
    # nothing was sampled or trained: no pool, no teacher cache, no checkpoint
    assert (
        not list(tmp_path.rglob("pool_*.jsonl"))
        and not list(tmp_path.rglob("*cache.jsonl"))
        and not list(tmp_path.rglob("round_*"))
    )
    figures("bad_inputs_tried")


def test_a_pool_is_checked_against_its_task(tmp_path, figures):
    """A stale pool (another question text or gold) is refused by file:line; a pool with only
    blank rationales is refused; empty sample lists and fewer than K samples are counted."""
    good = tmp_path / "good.jsonl"
    assert (
        invoke(
            "teach", "--task", "custom", "--spec", str(SHOP_SPEC), "--teacher", "pool", "-k", "3", "--out", str(good)
        ).returncode
        == 0
    )
    lines = good.read_text().splitlines()

    def teach_with(name: str, edit) -> object:
        records = [json.loads(line) for line in lines]
        edit(records)
        pool = tmp_path / f"{name}.jsonl"
        pool.write_text("".join(json.dumps(r) + "\n" for r in records))
        figures("bad_inputs_tried")
        return invoke(
            "teach",
            "--task",
            "custom",
            "--spec",
            str(SHOP_SPEC),
            "--teacher",
            "pool",
            "-o",
            f"teacher.pool={pool}",
            "-k",
            "3",
            "--out",
            str(tmp_path / f"{name}.out.jsonl"),
        )

    proc = teach_with("stale-gold", lambda rs: rs[4].update(gold="999"))
    assert (
        proc.returncode == 2
        and "stale-gold.jsonl:5: key 'gold'" in proc.stderr
        and "another version of the task" in proc.stderr
    )
    proc = teach_with("stale-text", lambda rs: rs[1].update(question=rs[1]["question"] + " Or not?"))
    assert proc.returncode == 2 and "stale-text.jsonl:2: key 'question'" in proc.stderr
    proc = teach_with("blank", lambda rs: [s.update(rationale="  ") for r in rs for s in r["samples"]])
    assert proc.returncode == 2 and "no sample with a rationale" in proc.stderr
    proc = teach_with("gaps", lambda rs: (rs[0].update(samples=[]), rs[1].update(samples=rs[1]["samples"][:1])))
    assert proc.returncode == 0, proc.stderr
    assert (
        "1 of 100 questions have no teacher sample" in proc.stderr
        and "fewer for 1 of 100 questions (as few as 1" in proc.stderr
    )
