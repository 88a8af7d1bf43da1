"""SIGKILL at every phase of a run, then `qcrd-bench run --resume`: the run ends with exactly the
metrics of an uninterrupted run, and no teacher sample is paid for twice. A Ctrl-C while training,
a NaN loss and a full disk in the same chain stop the run cleanly with the last good checkpoint
intact.

The kills are real SIGKILLs of the `qcrd-bench` process. The first comes from outside, from the
local OpenAI-compatible teacher server, in the middle of teacher sampling; the others are armed
with ``QCRD_FAULT`` (qcrd_plugin/faults.py) so that they land inside a chosen phase: training,
checkpoint writing, evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import ChatHandler, completion, invoke, serve

CLI = str(Path(sys.executable).with_name("qcrd-bench"))

# Small enough for CI, big enough to cross every phase twice (2 rounds, 2 iterations per round).
RUN = [
    "task.n_train=24",
    "task.n_valid=8",
    "task.n_test=12",
    "training.rounds=2",
    "training.steps_per_round=4",
    "training.iteration_steps=2",
    "training.batch_size=8",
    "training.warmup_steps=1",
    "judge.pretrain_steps=3",
    "judge.online_every=2",
    "negatives.j_back=1",
    "negatives.max_new_tokens=16",
    "evaluation.batch_size=32",
    "evaluation.faithfulness_items=3",
    "teacher.kind=openai",
    "teacher.model=local-teacher",
    "teacher.samples=2",
    "teacher.concurrency=1",
    "teacher.api_key_env=QCRD_TEST_TEACHER_KEY",
]
# Fields that measure the machine, not the run.
TIMING = {"time_s", "setup_time_s", "train_tokens_per_s", "checkpoint"}


class TeacherServer:
    """A deterministic OpenAI-compatible teacher on 127.0.0.1: the answer depends only on the
    prompt and the request's seed. It counts what it served, and can SIGKILL a client process
    when the n-th request arrives (before answering it)."""

    def __init__(self):
        self.served: dict[str, int] = {}  # (prompt, seed) key -> times answered
        self.served_text: dict[str, str] = {}
        self.kill_pid, self.kill_at, self.requests = None, None, 0
        self.lock = threading.Lock()
        server = self

        class Handler(ChatHandler):
            def do_POST(self):
                body = self.read_body()
                prompt = body["messages"][-1]["content"]
                key = hashlib.sha256(f"{prompt}|{body.get('seed')}".encode()).hexdigest()
                with server.lock:
                    server.requests += 1
                    if server.kill_pid and server.requests == server.kill_at:
                        os.kill(server.kill_pid, signal.SIGKILL)
                        server.kill_pid = None
                        self.close_connection = True
                        return
                    server.served[key] = server.served.get(key, 0) + 1
                digit = int(key[:4], 16)
                text = f"We add the numbers step by step. So the answer is {digit % 7}."
                server.served_text[key] = text
                self.reply(200, completion(text))

        self.httpd, self.url = serve(Handler)

    def close(self):
        self.httpd.shutdown()


def start(args: list[str], fault: str = "") -> subprocess.Popen:
    env = dict(os.environ, QCRD_TEST_TEACHER_KEY="sk-local-test", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("QCRD_FAULT", None)
    if fault:
        env["QCRD_FAULT"] = fault
    # SIGINT as in a terminal: a test runner started in the background ignores it, and its children inherit that.
    return subprocess.Popen(
        [CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def uninterrupted(output_dir: Path, name: str, overrides: list[str]) -> None:
    """A reference run in this process: the code path of `qcrd-bench run`, without a process's imports."""
    from qcrd_plugin.config import load_config
    from qcrd_plugin.training import run

    run(
        load_config(None, [*overrides, f"output_dir={output_dir}", f"name={name}"]), progress=False, log=lambda _: None
    )


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_sigkill_in_every_phase_then_resume_matches_uninterrupted_run(tmp_path, figures, monkeypatch):
    reference_server, server = TeacherServer(), TeacherServer()
    try:
        base = ["run", "--quiet", "--output-dir", str(tmp_path)]
        overrides = [arg for o in RUN for arg in ("-o", o)]
        # The uninterrupted reference runs in this process (the CLI's code path without paying its
        # imports again); every kill and resume below is a real qcrd-bench process.
        monkeypatch.setenv("QCRD_TEST_TEACHER_KEY", "sk-local-test")
        uninterrupted(tmp_path, "reference", RUN + [f"teacher.base_url={reference_server.url}"])
        expected = metrics(tmp_path / "reference")
        assert len(expected) == 2

        run_dir = tmp_path / "killed"
        first = base + ["--name", "killed", "-o", f"teacher.base_url={server.url}"] + overrides
        resume = ["run", "--quiet", "--resume", str(run_dir)]
        # 1. Teacher sampling: the server kills the client when request 30 of 64 arrives.
        proc = start(first)
        server.kill_pid, server.kill_at = proc.pid, 30
        proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL
        cached = len((run_dir / "teacher_cache.jsonl").read_text().splitlines())
        assert cached == 29, "every answer received before the kill is in the cache"
        figures("kills_survived")
        # 2-4. Training (round 1, step 3), checkpoint writing (round 1), evaluation (round 2); and in
        # between a NaN loss (round 2) and a full disk while round 2's checkpoint is written, each of
        # which must stop the run (exit code 1, one message) with round 1 intact.
        for fault, check in [
            ("kill@training_step=3", lambda: not (run_dir / "round_1").exists()),
            (
                "kill@checkpoint_write=1",
                lambda: not (run_dir / "round_1").exists() and any(run_dir.glob(".round_1.partial")),
            ),
            ("sigint@training_step=6", lambda: round_1_is_newest(run_dir)),  # Ctrl-C while training round 2
            ("nan@training_step=6", lambda: round_1_is_newest(run_dir)),
            ("enospc@checkpoint_write=2", lambda: round_1_is_newest(run_dir)),
            ("devfull@checkpoint_write=2", lambda: round_1_is_newest(run_dir)),  # torch.save's own error, on /dev/full
            (
                "kill@evaluation=2",
                lambda: len(metrics(run_dir)) == 1 and (run_dir / "round_2" / "training_state.pt").exists(),
            ),
            # after the last round's metrics, before the previous state is deleted (that window: the next test)
            ("kill@metrics_written=2", lambda: len(metrics(run_dir)) == 2),
        ]:
            proc = start(resume, fault)
            _, err = proc.communicate(timeout=300)
            if fault.startswith("kill"):
                assert proc.returncode == -signal.SIGKILL, f"{fault}: {err[-2000:]}"
                figures("kills_survived")
            elif fault.startswith("sigint"):
                assert proc.returncode == 130, f"{fault}: {err[-2000:]}"
                assert "Traceback" not in err and err.strip().splitlines() == [
                    "qcrd-bench: interrupted; a run continues with --resume"
                ], err[-2000:]
                figures("faults_injected")
                figures("faults_survived")
            else:
                assert proc.returncode == 1, f"{fault}: {err[-2000:]}"
                assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]
                assert (
                    "loss is nan at step 6 (round 2)"
                    if fault.startswith("nan")
                    else "could not write the round 2 checkpoint"
                ) in err
                assert "round_1/" in err and "--resume" in err
                figures("faults_injected")
                figures("faults_survived")
            assert check(), fault
        proc = start(resume)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    finally:
        reference_server.close()
        server.close()

    got = metrics(run_dir)
    assert comparable(got) == comparable(expected)
    # Nothing paid twice: every (prompt, seed) was answered once across the kill and the resumes.
    assert server.served and max(server.served.values()) == 1
    assert len(server.served) == len(reference_server.served)
    # Nothing lost: every answer the server delivered is in the run's teacher cache.
    cache = (run_dir / "teacher_cache.jsonl").read_text()
    lost = sum(len(text.encode()) for text in server.served_text.values() if json.dumps(text) not in cache)
    figures("bytes_lost", lost)
    assert lost == 0
    # Only the newest round keeps its training state; no half-written checkpoint is left.
    assert (
        not (run_dir / "round_1" / "training_state.pt").exists()
        and (run_dir / "round_2" / "training_state.pt").exists()
    )
    assert not list(run_dir.glob(".round_*.partial"))


def round_1_is_newest(run_dir: Path) -> bool:
    """Round 1's checkpoint is complete and loadable, and nothing of round 2 was left behind."""
    from transformers import AutoModelForSeq2SeqLM

    from qcrd_plugin.checkpoints import load_state

    AutoModelForSeq2SeqLM.from_pretrained(run_dir / "round_1")
    return (
        load_state(run_dir / "round_1")["step"] == 4
        and not (run_dir / "round_2").exists()
        and not list(run_dir.glob(".round_*.partial"))
    )


def test_second_run_in_same_directory_is_refused_while_first_holds_the_lock(tmp_path, figures):
    from qcrd_plugin.checkpoints import RunLock

    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    with RunLock(run_dir):
        result = invoke("run", "--output-dir", str(tmp_path), "--name", "busy", "--quiet")
    assert result.returncode == 2
    assert "in use by another qcrd-bench run" in result.stderr and str(os.getpid()) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # The lock went with its holder: the directory is free again.
    with RunLock(run_dir):
        pass
    figures("faults_injected")
    figures("faults_survived")


def test_existing_run_is_not_overwritten_without_a_flag(tmp_path):
    run_dir = tmp_path / "done"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"round": 1}\n')
    result = invoke("run", "--output-dir", str(tmp_path), "--name", "done", "--quiet")
    assert result.returncode == 2 and "--resume" in result.stderr and "--overwrite" in result.stderr
    assert (run_dir / "metrics.jsonl").read_text() == '{"round": 1}\n'


def test_damaged_checkpoints_and_an_early_kill_stop_resume_with_one_line(tmp_path, figures):
    """A resumed run whose newest checkpoint is truncated, corrupted or empty, or a run killed
    before it saved its config, gives exit code 2 and one line saying what to do; a kill right
    after the last metrics leaves no stale training state once resumed."""

    def assert_one_line(proc, code, *needles):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == code and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
        assert all(needle in lines[0] for needle in needles), lines[0]

    run_dir = tmp_path / "one"
    args = ["run", "--quiet", "--output-dir", str(tmp_path), "--name", "one", "-o", "teacher.kind=simulated"]
    for o in RUN:
        if not o.startswith("teacher."):
            args += ["-o", o]
    # Killed in round 2, so that a resume restores round 1.
    env = {**os.environ, "QCRD_FAULT": "kill@training_step=6"}
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == -signal.SIGKILL and (run_dir / "round_1").is_dir(), proc.stderr[-3000:]
    model, state = run_dir / "round_1" / "model.safetensors", run_dir / "round_1" / "training_state.pt"
    good_model, good_state = model.read_bytes(), state.read_bytes()
    for name, damage in [
        ("model truncated", lambda: model.write_bytes(good_model[: len(good_model) // 2])),
        ("model corrupted", lambda: model.write_bytes(good_model[:64] + bytes(len(good_model) - 64))),
        ("model empty", lambda: model.write_bytes(b"")),
        ("state truncated", lambda: state.write_bytes(good_state[: len(good_state) // 3])),
    ]:
        model.write_bytes(good_model)
        state.write_bytes(good_state)
        damage()
        resume = ["run", "--quiet", "--resume", str(run_dir)]
        # The first on a real process's stderr (what a library prints while loading would show
        # there); the others in this process, through the same CLI code, without its imports.
        if name == "model truncated":
            proc = subprocess.run([CLI, *resume], capture_output=True, text=True, timeout=600)
        else:
            proc = invoke(*resume)
        file = "model.safetensors" if name.startswith("model") else "training_state.pt"
        assert_one_line(proc, 2, f"round_1/{file}: damaged checkpoint", "remove", "--overwrite")
        figures("bad_inputs_tried")
    # A kill after round 2's metrics, before round 1's training state is deleted: the next
    # --resume (in this process) removes it, so only the newest round keeps one.
    model.write_bytes(good_model)
    state.write_bytes(good_state)
    proc = subprocess.run(
        [CLI, "run", "--quiet", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "QCRD_FAULT": "kill@metrics_written=2"},
    )
    assert (
        proc.returncode == -signal.SIGKILL and state.exists() and (run_dir / "round_2" / "training_state.pt").exists()
    )
    figures("kills_survived")
    proc = invoke("run", "--quiet", "--resume", str(run_dir))
    assert proc.returncode == 0 and "nothing to resume" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert not state.exists() and (run_dir / "round_2" / "training_state.pt").exists()
    early = tmp_path / "early"
    early.mkdir()
    (early / ".lock").write_text("123")
    proc = invoke("run", "--resume", str(early))
    assert (
        proc.returncode == 2
        and "stopped before it saved its config.yaml" in proc.stderr
        and "start it again" in proc.stderr
    )
    figures("bad_inputs_tried")


def test_a_finished_run_is_extended_with_more_rounds(tmp_path):
    """--resume RUN --rounds N continues a finished run to N rounds. With the warm-up spanning
    every step the learning-rate schedule does not depend on the total, so the extended run ends
    with the metrics of a run started with N rounds; fewer rounds or another key are refused.
    Both run with two micro-batches per step and choose their round on validation: the selection
    goes on with the run (fp16's loss scaler goes on likewise: tests/test_lora.py)."""
    small = [
        "-o",
        "task.n_train=24",
        "-o",
        "task.n_valid=8",
        "-o",
        "task.n_test=12",
        "-o",
        "training.steps_per_round=3",
        "-o",
        "training.warmup_steps=6",
        "-o",
        "judge.pretrain_steps=2",
        "-o",
        "evaluation.faithfulness=false",
        "-o",
        "evaluation.overlap=false",
        "-o",
        "teacher.kind=simulated",
        "-o",
        "training.grad_accum_steps=2",
        "-o",
        "evaluation.select=validation",
    ]
    proc = subprocess.run(
        [CLI, "run", "--quiet", "--output-dir", str(tmp_path), "--name", "extended", "--rounds", "1", *small],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    uninterrupted(tmp_path, "fresh", [*small[1::2], "training.rounds=2"])
    proc = subprocess.run(
        [CLI, "run", "--quiet", "--resume", str(tmp_path / "extended"), "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert comparable(metrics(tmp_path / "extended")) == comparable(metrics(tmp_path / "fresh"))
    assert all("selected_round" in record for record in metrics(tmp_path / "extended"))
    for extra, says in (
        (["--rounds", "1"], "can be extended, not shortened"),
        (["-o", "method.beta=0.3"], "only --rounds"),
    ):
        proc = invoke("run", "--resume", str(tmp_path / "extended"), *extra)
        assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
