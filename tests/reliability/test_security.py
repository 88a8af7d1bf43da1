"""Security (issue 6): secrets, unsafe deserialisation, remote code, eval of untrusted text, and
config values that would write outside the run directory.

The CLI is run as a real subprocess wherever what it prints matters (a secret must not appear in
stdout or stderr); the openai teacher talks to a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import ChatHandler, completion, serve

from qcrd_plugin import answers
from qcrd_plugin.config import RunConfig, describe_fields, load_config

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("qcrd-bench"))
KEY_ENV = "QCRD_SECURITY_TEST_KEY"
# The package's own code, the benchmarks and the lm-eval task folder: everything that ships.
SOURCES = sorted([*REPO.glob("qcrd_plugin/**/*.py"), *REPO.glob("benchmarks/**/*.py"), *REPO.glob("tasks/**/*.py")])


def cli(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})},
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``qcrd-bench: error:`` line of a refused command (exit code 2, no traceback)."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcrd-bench: error: "), result.stderr
    return lines[0]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


class EchoServer:
    """A chat-completions endpoint that answers every request ("ok" mode) or refuses it with a
    401 whose body echoes the key it was sent ("401" mode), as some real endpoints do. It records
    the Authorization header of every request."""

    def __init__(self):
        self.mode = "ok"
        self.auth: list[str] = []
        server = self

        class Handler(ChatHandler):
            def do_POST(self):
                self.read_body()
                auth = self.headers.get("Authorization", "")
                server.auth.append(auth)
                if server.mode == "401":
                    self.reply(
                        401, {"error": {"message": f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"}}
                    )
                else:
                    self.reply(200, completion("A better. 1 + 2 = 3. So the answer is 3."))

        self.httpd, self.url = serve(Handler)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- 1. API keys come from the environment only -------------------------------------------------


def test_no_config_key_holds_a_secret(tmp_path, figures):
    secret_like = re.compile(r"api_?key|secret|password|passwd|credential|auth|^token$|_token$|bearer", re.IGNORECASE)
    offenders = [
        key
        for key, _, _ in describe_fields(RunConfig)
        if secret_like.search(key.rsplit(".", 1)[-1]) and not key.endswith("_env")
    ]
    assert offenders == []
    sentinel = f"sk-test-SENTINEL-{uuid.uuid4().hex}"
    (tmp_path / "with_key.yaml").write_text(f"teacher:\n  kind: openai\n  api_key: {sentinel}\n")
    for args in (
        ["config", "-o", f"teacher.api_key={sentinel}"],
        ["config", "--config", str(tmp_path / "with_key.yaml")],
        ["run", "-o", f"teacher.api_key={sentinel}", "--output-dir", str(tmp_path / "runs")],
    ):
        result = cli(*args)
        figures("bad_inputs_tried")
        assert "unknown key 'teacher.api_key'" in one_error_line(result)
        assert sentinel not in result.stdout + result.stderr  # not even echoed back in the refusal
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_api_key_reaches_the_server_and_nothing_else(tmp_path, figures):
    """A tiny ``run`` and a ``teach`` with the openai teacher, then a ``teach`` and a ``judge``
    whose endpoint answers 401 echoing the key: the key goes out in the Authorization header and
    appears in no file written and in none of the CLI's output."""
    sentinel = f"sk-test-SENTINEL-{uuid.uuid4().hex}"
    env = {KEY_ENV: sentinel}
    server = EchoServer()
    teacher = [
        "-o",
        "teacher.kind=openai",
        "-o",
        "teacher.model=local",
        "-o",
        f"teacher.base_url={server.url}",
        "-o",
        f"teacher.api_key_env={KEY_ENV}",
        "-o",
        "teacher.samples=2",
        "-o",
        "teacher.concurrency=2",
    ]
    outputs = []
    try:
        run = cli(
            "run",
            "--output-dir",
            str(tmp_path / "runs"),
            "--name",
            "sec",
            "--quiet",
            *teacher,
            "-o",
            "task.n_train=6",
            "-o",
            "task.n_valid=2",
            "-o",
            "task.n_test=4",
            "-o",
            "training.rounds=1",
            "-o",
            "training.steps_per_round=2",
            "-o",
            "training.iteration_steps=2",
            "-o",
            "training.batch_size=4",
            "-o",
            "training.warmup_steps=0",
            "-o",
            "judge.pretrain_steps=1",
            "-o",
            "negatives.j_back=1",
            "-o",
            "negatives.max_new_tokens=8",
            "-o",
            "evaluation.limit=2",
            "-o",
            "evaluation.faithfulness=false",
            "-o",
            "evaluation.batch_size=8",
            "-o",
            "student.max_target_tokens=32",
            env=env,
        )
        outputs.append(run)
        assert run.returncode == 0, run.stdout + run.stderr
        requests_ok = len(server.auth)
        assert requests_ok == (6 + 2) * 2  # train + validation questions x 2 samples

        server.mode = "401"
        refused = cli(
            "teach",
            "--task",
            "synth",
            "--teacher",
            "openai",
            "--model",
            "local",
            "--base-url",
            server.url,
            "--api-key-env",
            KEY_ENV,
            "-k",
            "2",
            "--limit",
            "2",
            "--quiet",
            "--out",
            str(tmp_path / "teach" / "pool.jsonl"),
            "-o",
            "task.n_train=4",
            "-o",
            "task.n_valid=1",
            "-o",
            "task.n_test=1",
            env=env,
        )
        outputs.append(refused)
        figures("faults_injected")
        line = one_error_line(refused)
        assert "HTTP 401" in line and f"${KEY_ENV}" in line
        judged = cli(
            "judge",
            str(tmp_path / "runs" / "sec"),
            str(tmp_path / "runs" / "sec"),
            "--teacher",
            "openai",
            "--model",
            "local",
            "--base-url",
            server.url,
            "--api-key-env",
            KEY_ENV,
            "--items",
            "1",
            "--out",
            str(tmp_path / "judge.json"),
            env=env,
        )
        outputs.append(judged)
        figures("faults_injected")
        assert "HTTP 401" in one_error_line(judged)
        figures("faults_survived", 2)
    finally:
        server.close()

    # The server got the key, on every request (so this test could fail) ...
    assert len(server.auth) > requests_ok and set(server.auth) == {f"Bearer {sentinel}"}
    # ... and nothing else did: no file written, no line printed.
    written = [p for p in files_under(tmp_path) if p.is_file()]
    assert any(p.name == "teacher_cache.jsonl" for p in written) and any(p.name == "config.yaml" for p in written)
    leaks = [str(p) for p in written if sentinel.encode() in p.read_bytes()]
    leaks += [f"output of {r.args[1]}" for r in outputs if sentinel in r.stdout + r.stderr]
    assert leaks == []
    assert "SENTINEL" not in "".join(r.stdout + r.stderr for r in outputs)


# ---- 2. YAML with safe loaders only; no eval/exec --------------------------------------------------


def calls_named(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names
    ]


SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def unsafe_yaml_loads(tree: ast.AST) -> list[ast.Call]:
    """``yaml.load``/``load_all`` calls whose Loader is not a safe loader: ``yaml.SafeLoader`` and
    the like, or a class of the same module derived from one (the config's unique-key loader)."""
    bases = {
        node.name: [ast.unparse(b) for b in node.bases] for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
    }

    def safe(name: str, seen=()) -> bool:
        if name.removeprefix("yaml.") in SAFE_LOADERS and name.startswith("yaml."):
            return True
        return name in bases and name not in seen and any(safe(b, (*seen, name)) for b in bases[name])

    bad = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("load", "load_all")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "yaml"
        ):
            loader = [k.value for k in node.keywords if k.arg == "Loader"] + node.args[1:2]
            if not loader or not safe(ast.unparse(loader[0])):
                bad.append(node)
    return bad


def test_source_uses_safe_yaml_and_never_evals():
    assert SOURCES and any(p.name == "config.py" for p in SOURCES)
    unsafe_yaml = re.compile(r"unsafe_load|full_load|FullLoader|UnsafeLoader|yaml\.C?Loader\b|yaml\.UnsafeLoader")
    found = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in unsafe_yaml.finditer(text)]
        tree = ast.parse(text, str(path))
        found += [f"{path.relative_to(REPO)}:{c.lineno}: {ast.unparse(c)}" for c in unsafe_yaml_loads(tree)]
        # Builtins that run text as code. Method calls such as model.eval() and our own safe_eval
        # are attribute calls or other names, so they are not matched.
        found += [
            f"{path.relative_to(REPO)}:{c.lineno}: {c.func.id}()"
            for c in calls_named(tree, {"eval", "exec", "compile", "__import__"})
        ]
        found += [
            f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr in ("eval", "exec")
            and isinstance(node.value, ast.Name)
            and node.value.id == "builtins"
        ]
    assert found == []


@pytest.mark.parametrize("where", ["config", "run", "override", "leaderboard"])
def test_yaml_python_tags_are_refused(where, tmp_path, figures):
    marker = tmp_path / "pwned"
    payload = f'!!python/object/apply:os.system ["touch {marker}"]'
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"name: {payload}\n" if where != "leaderboard" else f"methods: {payload}\n")
    args = {
        "config": ["config", "--config", str(evil)],
        "run": ["run", "--config", str(evil), "--output-dir", str(tmp_path / "runs")],
        "override": ["config", "-o", f"name={payload}"],
        "leaderboard": ["leaderboard", "--config", str(evil)],
    }[where]
    result = cli(*args)
    figures("bad_inputs_tried")
    line = one_error_line(result)
    assert "python/object/apply" in line or "invalid YAML" in line or "not valid YAML" in line
    time.sleep(0.05)
    assert not marker.exists() and not (tmp_path / "runs").exists()


# ---- 3. trust_remote_code stays off unless the user sets it ---------------------------------------


def test_trust_remote_code_is_off_by_default_and_always_explicit():
    cfg = load_config()
    assert cfg.student.trust_remote_code is False and cfg.teacher.trust_remote_code is False
    found, implicit = [], []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "trust_remote_code"
                and not (isinstance(node.value, ast.Constant) and node.value.value is False)
                and not isinstance(node.value, (ast.Name, ast.Attribute))
            ):
                found.append(
                    f"{path.relative_to(REPO)}:{node.value.lineno}: trust_remote_code={ast.unparse(node.value)}"
                )
            # Auto* classes are the ones that can run a model's own code: they must be told explicitly.
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"
                and any(isinstance(n, ast.Name) and n.id.startswith("Auto") for n in ast.walk(node.func.value))
                and not any(k.arg == "trust_remote_code" for k in node.keywords)
            ):
                implicit.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node.func)}")
    assert found == [] and implicit == []


def test_model_code_is_not_run_without_trust_remote_code(tmp_path, figures):
    """A model folder whose config points at its own Python code (``auto_map``): loading it as the
    student or as the hf teacher is refused with a clear UserInputError, and the code never runs."""
    from qcrd_plugin.config import StudentConfig, TeacherConfig
    from qcrd_plugin.errors import UserInputError
    from qcrd_plugin.students import build_student
    from qcrd_plugin.teachers import HFTeacher, SampleCache

    model = tmp_path / "model"
    model.mkdir()
    auto_map = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForCausalLM": "modeling_evil.EvilModel",
        "AutoTokenizer": ["tokenization_evil.EvilTokenizer", None],
    }
    (model / "config.json").write_text(json.dumps({"model_type": "qcrd_evil", "auto_map": auto_map}))
    (model / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": auto_map["AutoTokenizer"]}, "tokenizer_class": "EvilTokenizer"})
    )
    marker = tmp_path / "pwned"
    for module in ("configuration_evil", "modeling_evil", "tokenization_evil"):
        (model / f"{module}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    with pytest.raises(UserInputError, match="student.trust_remote_code=true"):
        build_student(StudentConfig(pretrained=str(model)), [])
    with pytest.raises(UserInputError, match="teacher.trust_remote_code=true"):
        HFTeacher(TeacherConfig(kind="hf", model=str(model)), [], SampleCache(None))
    figures("bad_inputs_tried", 2)
    assert not marker.exists()


# ---- 4. labels and model outputs never reach eval/exec --------------------------------------------


def test_hostile_labels_and_outputs_are_only_parsed(tmp_path):
    from qcrd_plugin import lm_eval_tasks

    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    hostile = [
        code,
        f"The answer is {code}",
        f'Answer: eval("{code}")',
        f"#### (lambda: {code})()",
        f"2 + {code} = 4. So the answer is {code}.",
        f"exec(compile({code!r}, 'x', 'exec'))",
        "The answer is 9**9**9**9.",
        "#### 10**100000",
        f"{{{code}}}",
        "[c for c in ().__class__.__bases__[0].__subclasses__()]",
    ]
    start = time.perf_counter()
    for text in hostile:
        assert answers.safe_eval(text) is None or isinstance(answers.safe_eval(text), float)
        for answer_type, choices in (
            ("number", None),
            ("choice", ["a", "b"]),
            ("label", None),
            ("yesno", None),
            ("text", None),
        ):
            answers.predicted_answer(text, answer_type, choices)
            answers.stated_answer(text, answer_type, choices)
            answers.normalize_answer(text, answer_type, choices)
            answers.answers_match(answers.predicted_answer(text, answer_type, choices), text)
        answers.parse_label(text)
        answers.parse_stated_answer(text)
        answers.step_validity(text)
        doc = {"question": text, "answer": text, "answer_type": "number", "rationale": text}
        lm_eval_tasks.process_predict(doc, [text])
        lm_eval_tasks.process_explain(doc, [text, text])
        lm_eval_tasks.process_cot(doc, [text])
    assert time.perf_counter() - start < 10  # no huge powers computed either
    assert not marker.exists()


# ---- 5. no config value writes outside the run directory ------------------------------------------

ESCAPES = ["../escape", "a/../../b", "a/b", "..", ".", "a\\..\\b", ""]


@pytest.mark.parametrize("name", ESCAPES + ["/abs"])
def test_run_name_cannot_leave_the_output_dir(name, tmp_path, figures):
    outdir = tmp_path / "work" / "runs"
    outdir.mkdir(parents=True)
    if name == "/abs":
        name = str(tmp_path / "abs")
    before = files_under(tmp_path)
    for args in (
        ["run", "--output-dir", str(outdir), "--name", name],
        ["run", "--output-dir", str(outdir), "-o", f"name={json.dumps(name)}"],
    ):
        result = cli(*args, cwd=outdir)
        figures("bad_inputs_tried")
        assert "key 'name'" in one_error_line(result) and "not a plain folder name" in result.stderr
    (tmp_path / "cfg.yaml").write_text(f"name: {json.dumps(name)}\noutput_dir: {json.dumps(str(outdir))}\n")
    result = cli("run", "--config", str(tmp_path / "cfg.yaml"), cwd=outdir)
    figures("bad_inputs_tried")
    assert "key 'name'" in one_error_line(result)
    assert files_under(tmp_path) == before | {tmp_path / "cfg.yaml"}  # nothing created, inside or out


@pytest.mark.parametrize("label", ["../escape", "a/b", "/abs"])
def test_leaderboard_task_label_cannot_leave_the_output_dir(label, tmp_path, figures):
    if label == "/abs":
        label = str(tmp_path / "abs")
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        f"output_dir: {json.dumps(str(tmp_path / 'lb'))}\nmethods: [dss]\nseeds: [0]\n"
        f"tasks:\n  {json.dumps(label)}: []\n"
    )
    before = files_under(tmp_path)
    result = cli("leaderboard", "--config", str(grid), cwd=tmp_path)
    figures("bad_inputs_tried")
    assert "not a plain folder name" in one_error_line(result)
    assert files_under(tmp_path) == before


def test_data_prepare_source_cannot_leave_the_out_dir(tmp_path, figures):
    """``data prepare`` names its folders <task>-<source>: an unknown source is refused before any write."""
    result = cli(
        "data", "prepare", "--task", "svamp", "--source", "../../escape", "--out", str(tmp_path / "prep"), cwd=tmp_path
    )
    figures("bad_inputs_tried")
    assert "no source" in one_error_line(result)
    assert not (tmp_path / "prep").exists() and not (tmp_path.parent / "escape").exists()


def test_a_shared_teacher_cache_is_read_but_never_written(tmp_path):
    """`teacher.cache` may point outside the run directory (a cache shared between runs): the run
    reuses its answers and appends new ones only to its own teacher_cache.jsonl."""
    from qcrd_plugin.config import TeacherConfig
    from qcrd_plugin.questions import Question, TaskData
    from qcrd_plugin.teachers import build_teacher

    server = EchoServer()
    try:
        questions = [Question(f"q{i}", f"What is {i} + 3?", str(i + 3)) for i in range(4)]
        data = TaskData("shop", "custom", {"train": questions})
        shared = tmp_path / "shared" / "cache.jsonl"
        shared.parent.mkdir()
        cfg = TeacherConfig(kind="openai", model="m", base_url=server.url, cache=str(shared), concurrency=2)
        build_teacher(cfg, data, shared).sample(questions[:2], 2, 0.7)  # what `teach` would leave there
        before, asked_before = shared.read_bytes(), len(server.auth)
        run_cache = tmp_path / "runs" / "r" / "teacher_cache.jsonl"
        run_cache.parent.mkdir(parents=True)
        build_teacher(cfg, data, run_cache).sample(questions, 2, 0.7)
    finally:
        server.close()
    assert shared.read_bytes() == before and files_under(tmp_path / "shared") == {shared}
    assert len(server.auth) - asked_before == 4  # only the 2 new questions x 2 samples were asked
    assert len(run_cache.read_text().splitlines()) == 4
