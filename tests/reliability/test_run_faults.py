"""A diverged loss and a full disk: the run stops with one clear message, the last good checkpoint
stays intact and loadable, and `--resume` finishes the run afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("qcrd-bench"))
RUN = [
    "task.n_train=24", "task.n_valid=8", "task.n_test=12",
    "training.rounds=2", "training.steps_per_round=4", "training.iteration_steps=2", "training.batch_size=8",
    "training.warmup_steps=1", "judge.pretrain_steps=3", "judge.online_every=2", "negatives.j_back=1",
    "negatives.max_new_tokens=16", "evaluation.batch_size=32", "evaluation.faithfulness=false",
]


def cli(args: list[str], fault: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("QCRD_FAULT", None)
    if fault:
        env["QCRD_FAULT"] = fault
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300)


def assert_round_1_intact(run_dir: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM

    from qcrd_plugin.checkpoints import load_state

    model = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "round_1")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert load_state(run_dir / "round_1")["step"] == 4
    assert not (run_dir / "round_2").exists() and not list(run_dir.glob(".round_*.partial"))


@pytest.mark.slow
def test_nan_loss_and_full_disk_stop_cleanly_and_resume(tmp_path, figures):
    run_dir = tmp_path / "faulty"
    first = ["run", "--quiet", "--output-dir", str(tmp_path), "--name", "faulty"] + [a for o in RUN for a in ("-o", o)]

    # A NaN loss in round 2: stopped before the update is applied, round 1 kept.
    proc = cli(first, "nan@training_step=6")
    figures("faults_injected")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "loss is nan at step 6 (round 2)" in proc.stderr and "round_1/" in proc.stderr and "Traceback" not in proc.stderr
    assert_round_1_intact(run_dir)
    figures("faults_survived")

    # The disk fills up while round 2's checkpoint is written: round 1 stays the newest checkpoint.
    proc = cli(["run", "--quiet", "--resume", str(run_dir)], "enospc@checkpoint_write=2")
    figures("faults_injected")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "could not write the round 2 checkpoint" in proc.stderr and "No space left" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_round_1_intact(run_dir)
    figures("faults_survived")

    proc = cli(["run", "--quiet", "--resume", str(run_dir)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and (run_dir / "round_2" / "config.json").exists()
