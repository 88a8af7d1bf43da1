"""A real OpenAI-compatible teacher server: llama.cpp's (``python -m llama_cpp.server``, the
``teacher-server`` extra) serving SmolLM2-135M-Instruct's GGUF (the ``smollm2`` extra) on
127.0.0.1, the thing users run as a local teacher. The fake servers of test_teachers.py and
tests/reliability stay for fault injection; this one is for "it works with the real thing".

One server per module, with a bounded lifetime: it is killed at teardown, and ``timeout`` ends it
after 15 minutes whatever happens to the test process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
QCRD = [sys.executable, "-m", "qcrd_plugin.cli"]
SERVER_LIFETIME_S = 900
REQUEST_LINE = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" 200')
SMALL = ["-o", "teacher.max_new_tokens=48", "-o", "task.n_train=6", "-o", "task.n_valid=3", "-o", "task.n_test=8"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on a free port of 127.0.0.1; its access log counts requests."""

    def __init__(self, model: Path, log: Path):
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            pytest.fail("llama-cpp-python is not installed: pip install 'qcrd-bench[teacher-server]' (make test does)")
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}/v1"
        command = ["timeout", str(SERVER_LIFETIME_S), sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--n_threads", "1"]
        self.handle = open(log, "w")
        self.process = subprocess.Popen(command, stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {self.process.returncode}: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.5)
        self.close()
        pytest.fail(f"llama_cpp.server did not answer within 120 s: {log.read_text()[-2000:]}")

    def requests_served(self) -> int:
        """Chat completions answered so far (uvicorn's access log, one line per request)."""
        self.handle.flush()
        return len(REQUEST_LINE.findall(self.log.read_text(errors="replace")))

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.handle.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from qcrd_plugin.pretrained import shipped_path

    model = shipped_path("smollm2-135m", "teacher.model")
    llama = LlamaServer(model, tmp_path_factory.mktemp("llama") / "server.log")
    yield llama
    llama.close()


def teach(server, out: Path, *extra: str, split: str = "train", limit: int = 2, **popen):
    command = QCRD + ["teach", "--task", "synth", "--split", split, "--limit", str(limit), "--teacher", "openai"]
    command += ["--model", "smollm2", "--base-url", server.url, "-k", "2", "-t", "0.7", "--out", str(out), "--quiet"]
    command += SMALL + list(extra)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(command, env=env, cwd=REPO, **popen)
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def pool_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_server_ignores_n_so_k_samples_take_k_requests(server):
    """The fact the teacher is built around: llama.cpp's server answers n=2 with one choice."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "n": 2, "max_tokens": 8}
    reply = requests.post(f"{server.url}/chat/completions", json=body, timeout=120).json()
    assert len(reply["choices"]) == 1
    # ... and says why it stopped, as the OpenAI API does: what teach records per sample.
    body["messages"][0]["content"], body["max_tokens"] = "Count from 1 to 100, one number a line.", 4
    reply = requests.post(f"{server.url}/chat/completions", json=body, timeout=120).json()
    assert reply["choices"][0]["finish_reason"] == "length"


def test_teach_gets_k_real_samples_then_reuses_the_cache(server, tmp_path):
    out = tmp_path / "pool.jsonl"
    before = server.requests_served()
    proc = teach(server, out)
    assert proc.returncode == 0, proc.stderr
    entries = pool_lines(out)
    assert len(entries) == 2 and all(len(e["samples"]) == 2 for e in entries)
    texts = [s["rationale"] for e in entries for s in e["samples"]]
    assert all(len(t.split()) >= 3 for t in texts), texts  # real generated text, not an empty stub
    assert len(set(texts)) == 4  # four samples at temperature 0.7, each its own request and seed
    # The server's finish reason is kept per sample; a chain stopped at the limit states no closing quantity.
    samples = [s for e in entries for s in e["samples"]]
    assert all(s["finish_reason"] in ("stop", "length") for s in samples), samples
    from qcrd_plugin.answers import finished_part, stated_answer

    for s in samples:  # a cut chain: only an explicit answer, in a sentence it finished
        explicit = stated_answer(finished_part(s["rationale"]), "number", require_phrase=True)
        assert s["finish_reason"] != "length" or s["answer"] == explicit, s
    assert server.requests_served() - before == 4
    assert "pool statistics" in proc.stdout
    again = teach(server, out)
    assert again.returncode == 0, again.stderr
    assert server.requests_served() - before == 4  # the rerun asked nothing: every answer came from the cache
    assert pool_lines(out) == entries


def test_a_killed_teach_resumes_without_asking_twice(server, tmp_path):
    out = tmp_path / "pool.jsonl"
    cache = Path(str(out) + ".cache.jsonl")
    before = server.requests_served()
    child = teach(server, out, limit=4, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 2):
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    kept = len(cache.read_text().splitlines())
    assert 2 <= kept < 8 and not out.exists()
    asked_before_kill = server.requests_served() - before
    proc = teach(server, out, limit=4)
    assert proc.returncode == 0, proc.stderr
    assert all(len(e["samples"]) == 2 for e in pool_lines(out)) and len(pool_lines(out)) == 4
    # Every cached answer is reused; only the rest is asked (a request in flight at the kill may be asked again).
    assert server.requests_served() - before - asked_before_kill == 8 - kept


def test_a_real_pool_trains_a_student_for_one_round(server, tmp_path):
    """teach (train and validation splits) -> one pool file -> `run` on it, one short round."""
    train, valid, pool = tmp_path / "train.jsonl", tmp_path / "valid.jsonl", tmp_path / "pool.jsonl"
    for out, split, limit in ((train, "train", 6), (valid, "validation", 3)):
        proc = teach(server, out, split=split, limit=limit)
        assert proc.returncode == 0, proc.stderr
    pool.write_text(train.read_text() + valid.read_text())
    command = QCRD + ["run", "--task", "synth", "--output-dir", str(tmp_path / "runs"), "--name", "real", "--quiet"]
    command += SMALL + ["-o", "teacher.kind=pool", "-o", f"teacher.pool={pool}", "-o", "teacher.samples=2"]
    command += ["-o", "training.rounds=1", "-o", "training.steps_per_round=3", "-o", "training.batch_size=2"]
    command += [
        "-o",
        "judge.pretrain_steps=2",
        "-o",
        "training.warmup_steps=1",
        "-o",
        "evaluation.faithfulness_items=2",
    ]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "real" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["round"] == 1 and record["pool"]["samples"] == 12  # 6 train questions x 2 real samples
