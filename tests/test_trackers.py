"""Live tracking (issue 17): `qcrd-bench run --report-to tensorboard,wandb` logs every step's
losses and every round's metrics while it runs. TensorBoard is checked by reading its event files
back; W&B runs in offline mode (WANDB_MODE=offline, no network) and is checked through the run
record it writes. A tracker whose package is missing stops the run before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("qcrd-bench"))
SMALL = [
    "task.n_train=24",
    "task.n_valid=8",
    "task.n_test=12",
    "training.rounds=2",
    "training.steps_per_round=3",
    "judge.pretrain_steps=2",
    "evaluation.faithfulness=false",
    "evaluation.overlap=false",
]


@pytest.mark.slow
def test_report_to_logs_steps_and_rounds_live_to_tensorboard_and_wandb(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is part of the test extra")
    pytest.importorskip("wandb", reason="the wandb extra is part of the test extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [
            CLI,
            "run",
            "--quiet",
            "--output-dir",
            str(tmp_path),
            "--report-to",
            "tensorboard,wandb",
            *[a for o in SMALL for a in ("-o", o)],
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "default"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 7))
    assert [round(e.value, 5) for e in losses] == [round(v, 5) for r in records for v in r["loss_curve"]]
    accuracy = events.Scalars("round/eval/qcrd_synth/acc")
    assert [(e.step, e.value) for e in accuracy] == [
        (r["step"], pytest.approx(r["eval"]["qcrd_synth"]["acc"])) for r in records
    ]
    assert "pool/samples" in events.Tags()["scalars"]
    offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0  # the run W&B would sync, with its history


def test_a_missing_tracker_package_stops_before_any_work(tmp_path):
    """A tracker whose package cannot be imported: exit code 2, one line naming the key and the extra."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    # The real package hidden from the child, as if it were not installed: its find_spec sees no wandb.
    (shadow / "sitecustomize.py").write_text(
        "import importlib.util, sys\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a, **k: None if name == 'wandb' else _find(name, *a, **k)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [CLI, "run", "--quiet", "--output-dir", str(tmp_path / "runs"), "--report-to", "wandb"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "training.report_to" in lines[0] and "pip install 'qcrd-bench[wandb]'" in lines[0]
    assert not (tmp_path / "runs" / "default" / "pool_train.jsonl").exists()  # stopped before the teacher
