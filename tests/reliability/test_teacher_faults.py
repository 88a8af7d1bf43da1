"""Teacher faults (issue 6): the ``openai`` teacher against a real HTTP server on 127.0.0.1 that
misbehaves the ways real endpoints do (429 with and without Retry-After, 5xx, answers slower than
``timeout_s``, malformed bodies, connections dropped before or in the middle of a response, 4xx
refusals).

What must hold: transient faults are retried a bounded number of times; a fault that does not go
away ends in one clear :class:`TeacherError` (one line from the CLI, exit code 2); every
completion the server delivered is in the cache afterwards (bytes lost = 0), and a rerun asks the
server only for the samples that are missing.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import ChatHandler, completion, serve

from qcrd_plugin.cli import main
from qcrd_plugin.config import TeacherConfig
from qcrd_plugin.errors import UserInputError
from qcrd_plugin.questions import Question, TaskData
from qcrd_plugin.teachers import OpenAITeacher, SampleCache, TeacherError, build_teacher

QUESTIONS = [Question(f"q{i}", f"Ada has {i} pens and buys 2 more. How many pens?", str(i + 2)) for i in range(5)]
TIMEOUT_S = 0.25

# Faults the teacher must ride out by asking again; then the ones it must not ask again for.
TRANSIENT = [
    "429",
    "429-retry-after",
    "500",
    "502",
    "503",
    "timeout",
    "truncated-json",
    "no-choices",
    "empty-choices",
    "choices-not-a-list",
    "content-not-text",
    "not-json",
    "drop-before",
    "drop-mid",
    "empty-content",
    "null-content",
    "trickle",
]
REFUSALS = [400, 401, 403, 404]


def sample_key(prompt: str, seed: int) -> str:
    """The server's name for one (question, sample index): ``q<n>|<seed>`` for the Ada questions."""
    if "pens and buys 2 more" in prompt:
        return f"q{int(prompt.rsplit('Ada has ', 1)[1].split()[0])}|{seed}"
    return hashlib.sha256(prompt.encode()).hexdigest()[:10] + f"|{seed}"


class FaultServer:
    """An OpenAI-compatible chat endpoint whose ``plan(key, attempt)`` names the fault (or None)
    for each request. It records every request (key, attempt, fault, Authorization header) and,
    in ``delivered``, the text of every good completion it wrote out in full."""

    def __init__(self, plan=lambda key, attempt: None):
        self.plan = plan
        self.requests: list[tuple[str, int, str | None, str]] = []
        self.attempts: dict[str, int] = {}
        self.delivered: dict[str, str] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(ChatHandler):
            def do_POST(self):
                body = self.read_body()
                key = sample_key(body["messages"][-1]["content"], body["seed"])
                auth = self.headers.get("Authorization", "")
                with server.lock:
                    attempt = server.attempts[key] = server.attempts.get(key, 0) + 1
                    fault = server.plan(key, attempt)
                    server.requests.append((key, attempt, fault, auth))
                number = key.split("|")[0].lstrip("q")
                answer = int(number) + 2 if number.isdigit() else 7
                text = f"[{key}] Ada has {number} pens, so {number} + 2 = {answer}. So the answer is {answer}."
                good = json.dumps(completion(text)).encode()
                if fault is None:
                    self.reply(200, good)
                    with server.lock:
                        server.delivered[key] = text
                elif fault in ("429", "500", "502", "503"):
                    self.reply(int(fault), b'{"error": {"message": "busy"}}')
                elif fault == "429-retry-after":
                    self.reply(429, b"{}", {"Retry-After": "2"})
                elif fault == "timeout":
                    time.sleep(TIMEOUT_S * 3)  # the client has given up on this one: not a delivery
                    try:
                        self.reply(200, good)
                    except OSError:
                        pass
                elif fault == "truncated-json":
                    self.reply(200, good[: len(good) // 2])
                elif fault == "no-choices":
                    self.reply(200, b'{"id": "x", "object": "chat.completion"}')
                elif fault == "empty-choices":
                    self.reply(200, b'{"choices": []}')
                elif fault == "choices-not-a-list":
                    self.reply(200, b'{"choices": "oops"}')
                elif fault == "hang":  # a server that never answers (within any test's patience)
                    time.sleep(30)
                elif fault == "empty-content":
                    self.reply(200, b'{"choices": [{"message": {"content": ""}}]}')
                elif fault == "null-content":
                    self.reply(200, b'{"choices": [{"message": {"content": null}}]}')
                elif (
                    fault == "trickle"
                ):  # headers at once, then the body a byte at a time, each well within the read timeout
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(good)))
                    self.end_headers()
                    try:
                        for byte in good[:-1]:  # never the last byte: only a total deadline ends this request
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(TIMEOUT_S / 5)
                    except OSError:
                        pass  # the client gave up: as it should
                    self.close_connection = True
                elif fault == "content-not-text":
                    self.reply(200, b'{"choices": [{"message": {"content": 42}}]}')
                elif fault == "not-json":
                    self.reply(200, b"<html><body>502 Bad Gateway</body></html>")
                elif fault == "drop-before":
                    self.close_connection = True  # close the socket without a byte of response
                elif fault == "drop-mid":
                    self.reply(200, good[: len(good) // 2], length=len(good))  # promise more, then hang up
                    self.close_connection = True
                else:  # a refusal: 4xx whose body echoes the key, as some real endpoints do
                    message = f"refused; you sent {auth.removeprefix('Bearer ')!r}"
                    self.reply(int(fault), json.dumps({"error": {"message": message}}).encode())

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that hung up on a slow reply: expected here

        self.httpd, self.url = serve(Handler, Server)

    def faulted(self) -> int:
        return sum(1 for r in self.requests if r[2] is not None)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultServer()
    yield s
    s.close()


def make_teacher(server, cache: Path, waits: list | None = None, **cfg) -> OpenAITeacher:
    cfg = TeacherConfig(
        kind="openai",
        model="local",
        base_url=server.url,
        timeout_s=TIMEOUT_S,
        **{"concurrency": 3, "max_retries": 2, **cfg},
    )
    teacher = build_teacher(cfg, TaskData("custom", "test", {"train": QUESTIONS}), cache)
    teacher.sleep = (lambda s: waits.append(s)) if waits is not None else (lambda s: None)
    return teacher


def bytes_lost(server: FaultServer, cache: Path) -> int:
    """Bytes of completions the server delivered whose text is not in the cache file (read afresh)."""
    kept = set(SampleCache(cache).items.values())
    return sum(len(text.encode()) for text in server.delivered.values() if text.strip() not in kept)


def check_answers(pool, k: int) -> None:
    assert [[s.answer for s in e.samples] for e in pool] == [[float(q.answer)] * k for q in QUESTIONS]


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_fault_is_retried_and_nothing_is_lost(fault, server, tmp_path, figures):
    """Every sample's first request meets the fault; each is asked again once and succeeds."""
    server.plan = lambda key, attempt: fault if attempt == 1 else None
    cache, waits = tmp_path / "cache.jsonl", []
    teacher = make_teacher(server, cache, waits)
    started = time.monotonic()
    pool = teacher.sample(QUESTIONS, 2, 0.7)
    # A trickled answer (a byte every TIMEOUT_S / 5, ~40 s in all) is given up at the deadline.
    assert time.monotonic() - started < 20
    injected = server.faulted()
    figures("faults_injected", injected)

    check_answers(pool, 2)
    assert injected == 2 * len(QUESTIONS) and teacher.retries == injected
    assert len(server.requests) == 2 * injected  # bounded: exactly one more try per fault
    if fault == "429-retry-after":
        assert waits == [2.0] * injected  # the server's Retry-After is honoured
    else:
        assert all(0 <= w <= 0.5 for w in waits)  # first backoff: full jitter in [0, base]
    assert len(SampleCache(cache).items) == 2 * len(QUESTIONS)
    lost = bytes_lost(server, cache)
    figures("bytes_lost", lost)
    assert lost == 0
    figures("faults_survived", injected)


PERSISTENT = [
    "503",
    "429",
    "timeout",
    "truncated-json",
    "no-choices",
    "content-not-text",
    "not-json",
    "drop-before",
    "drop-mid",
]


@pytest.mark.parametrize("fault", PERSISTENT)
def test_persistent_fault_gives_up_cleanly_and_the_rerun_pays_nothing_twice(fault, server, tmp_path, figures):
    """One sample (q2, index 1) meets the fault on every try: the teacher gives up after
    ``max_retries`` + 1 tries with a TeacherError, keeps every delivered completion in the cache,
    and a rerun asks only for the samples that are not there."""
    bad = "q2|1"
    server.plan = lambda key, attempt: fault if key == bad else None
    cache = tmp_path / "cache.jsonl"
    with pytest.raises(TeacherError, match=r"gave up after 3 tries") as info:
        make_teacher(server, cache, concurrency=2).sample(QUESTIONS, 2, 0.7)
    figures("faults_injected", server.faulted())
    assert isinstance(info.value, UserInputError)  # the CLI prints it as one line, exit code 2
    assert server.attempts[bad] == 3 and server.faulted() == 3
    assert all(n == 1 for key, n in server.attempts.items() if key != bad)  # nothing asked twice
    assert set(SampleCache(cache).items.values()) == {t.strip() for t in server.delivered.values()}
    lost = bytes_lost(server, cache)
    figures("bytes_lost", lost)
    assert lost == 0

    # The rerun, the endpoint healthy again: only what is not cached is asked for, once.
    server.plan = lambda key, attempt: None
    before, first_delivered = len(server.requests), set(server.delivered)
    pool = make_teacher(server, cache).sample(QUESTIONS, 2, 0.7)
    rerun = [r[0] for r in server.requests[before:]]
    every = {f"q{i}|{s}" for i in range(len(QUESTIONS)) for s in range(2)}
    assert sorted(rerun) == sorted(every - first_delivered)
    check_answers(pool, 2)
    assert bytes_lost(server, cache) == 0
    figures("faults_survived", 3)


@pytest.mark.parametrize("status", REFUSALS)
def test_refusal_fails_fast_without_the_key(status, server, tmp_path, monkeypatch, figures):
    """400/401/403/404 are not asked again; the message says what to check and never holds the
    key, even though the server's body echoes it."""
    secret = "sk-test-SENTINEL-faults-0123456789"
    monkeypatch.setenv("QCRD_FAULTS_TEST_KEY", secret)
    server.plan = lambda key, attempt: str(status) if key == "q1|0" else None
    cache = tmp_path / "cache.jsonl"
    with pytest.raises(TeacherError) as info:
        make_teacher(server, cache, concurrency=1, api_key_env="QCRD_FAULTS_TEST_KEY").sample(QUESTIONS, 2, 0.7)
    figures("faults_injected", 1)
    message = str(info.value)
    assert f"HTTP {status}" in message and "\n" not in message
    assert secret not in message and "SENTINEL" not in message
    assert all(r[3] == f"Bearer {secret}" for r in server.requests)  # the key did go where it belongs
    if status in (401, 403):
        assert "$QCRD_FAULTS_TEST_KEY" in message
    assert server.attempts["q1|0"] == 1  # fail fast: no retry
    assert [r[0] for r in server.requests] == ["q0|0", "q0|1", "q1|0"]  # and nothing queued starts after it
    assert len(SampleCache(cache).items) == 2 and bytes_lost(server, cache) == 0
    figures("bytes_lost", bytes_lost(server, cache))
    assert secret not in cache.read_text()
    figures("faults_survived", 1)


def test_torn_cache_lines_are_counted_and_never_glue_to_the_next_record(tmp_path, caplog, figures):
    """A kill mid-write leaves a torn last line (here cut inside a multi-byte character): the
    cache loads with one counted notice, and the next record starts on a line of its own."""
    path = tmp_path / "cache.jsonl"
    cache = SampleCache(path)
    texts = {f"k{i}": f"rationale {i}: 2 + {i} = {2 + i}. So the answer is {2 + i}." for i in range(3)}
    for key, text in texts.items():
        cache.put(key, text)
    with open(path, "ab") as handle:
        handle.write(b'{"key": "k3", "text": "caf\xc3')  # torn: no closing quote, half a UTF-8 character
    figures("faults_injected", 1)
    with caplog.at_level("WARNING", logger="qcrd_plugin.teachers"):
        reread = SampleCache(path)
    assert reread.items == texts and reread.skipped == 1
    assert "skipped 1 unreadable line" in caplog.text
    reread.put("k4", "the answer is 9.")
    final = SampleCache(path)
    assert final.items == {**texts, "k4": "the answer is 9."} and final.skipped == 1
    lost = sum(len(t) for k, t in {**texts, "k4": "the answer is 9."}.items() if final.items.get(k) != t)
    figures("bytes_lost", lost)
    assert lost == 0
    figures("faults_survived", 1)


def test_cli_teach_prints_one_line_and_a_rerun_resumes(server, tmp_path, figures):
    """Through ``qcrd-bench teach``: the endpoint keeps failing for one sample -> exit 2 and one
    line on stderr, no traceback, no pool; the rerun asks only for what is not cached."""
    order: list[str] = []

    def plan(key, attempt):  # the third sample asked for keeps failing
        if key not in order:
            order.append(key)
        return "503" if order.index(key) == 2 else None

    server.plan = plan
    out = tmp_path / "pool.jsonl"
    args = [
        "teach",
        "--task",
        "synth",
        "--teacher",
        "openai",
        "--model",
        "local",
        "--base-url",
        server.url,
        "--concurrency",
        "1",
        "-k",
        "2",
        "--limit",
        "3",
        "--out",
        str(out),
        "--quiet",
        "-o",
        "teacher.max_retries=1",
        "-o",
        "task.n_train=8",
        "-o",
        "task.n_valid=2",
        "-o",
        "task.n_test=2",
    ]
    result = CliRunner().invoke(main, args)
    figures("faults_injected", server.faulted())
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # _fail, not a traceback
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("qcrd-bench: error: teacher endpoint")
        and "gave up after 2 tries" in lines[0]
    )
    assert "Traceback" not in result.output and not out.exists()
    cache = Path(str(out) + ".cache.jsonl")
    assert server.faulted() == 2 and len(SampleCache(cache).items) == 2 == len(server.delivered)
    assert bytes_lost(server, cache) == 0

    server.plan = lambda key, attempt: None
    before, first_delivered = len(server.requests), set(server.delivered)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rerun = [r[0] for r in server.requests[before:]]
    assert len(rerun) == 4 and not set(rerun) & first_delivered  # 3 questions x 2 samples, 2 already paid for
    assert len(out.read_text().splitlines()) == 3
    lost = bytes_lost(server, cache)
    figures("bytes_lost", lost)
    assert lost == 0
    figures("faults_survived", 2)


def test_ctrl_c_stops_teach_at_once_and_keeps_every_answer(tmp_path, figures):
    """SIGINT while requests hang: teach exits within seconds (not teacher.timeout_s = 60), with
    one line, and every answer received before is in the cache; the rerun asks only for the rest."""
    import signal
    import subprocess
    import sys

    hanging = threading.Event()

    def plan(key, attempt):  # q0's first sample is answered, the next request hangs
        if key == "q0|0":
            return None
        hanging.set()
        return "hang"

    server = FaultServer(plan)
    spec = tmp_path / "t.yaml"
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"id": q.id, "question": q.question, "answer": q.answer}) + "\n" for q in QUESTIONS)
    )
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "2 + 2?", "answer": 4}) + "\n")
    spec.write_text("name: t\nanswer_type: number\nfiles: {train: t.jsonl, test: test.jsonl}\n")
    cache = tmp_path / "cache.jsonl"
    cli = [
        str(Path(sys.executable).with_name("qcrd-bench")),
        "teach",
        "--task",
        "custom",
        "--spec",
        str(spec),
        "--teacher",
        "openai",
        "--model",
        "local",
        "--base-url",
        server.url,
        "-k",
        "2",
        "--concurrency",
        "1",
        "--cache",
        str(cache),
        "--out",
        str(tmp_path / "p.jsonl"),
        "--quiet",
        "-o",
        "teacher.timeout_s=60",
    ]
    try:
        proc = subprocess.Popen(
            cli,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,  # SIGINT as in a terminal
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert hanging.wait(120), "the hanging request never came"
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        server.close()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and took < 15, (proc.returncode, took, err[-2000:])
    assert len(lines) == 1 and "interrupted: 1 teacher answers are kept" in lines[0], err[-2000:]
    assert len(SampleCache(cache).items) == 1 and not (tmp_path / "p.jsonl").exists()
    figures("faults_injected")
    figures("faults_survived")
