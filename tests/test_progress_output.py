"""A run whose output goes to a log file or a pipe: progress bars refresh a bounded number of times,
and the per-round result lines stay visible."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import TINY_OVERRIDES


def bar_refreshes(stderr: str, desc: str) -> int:
    """How many times the bar named ``desc`` was drawn (tqdm separates refreshes by a carriage return)."""
    return sum(1 for part in re.split(r"[\r\n]", stderr) if part.startswith(desc) and "it" in part)


def test_a_piped_run_refreshes_its_bars_a_bounded_number_of_times(tmp_path):
    steps = 40
    overrides = TINY_OVERRIDES + ["training.rounds=1", f"training.steps_per_round={steps}", "method.name=dss"]
    cmd = [sys.executable, "-m", "qcrd_plugin.cli", "run", "--output-dir", str(tmp_path), "--name", "piped"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        cmd + [a for o in overrides for a in ("-o", o)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    training = bar_refreshes(proc.stderr, "round 1/1 training")
    # tqdm's terminal default (every 0.1 s) draws this bar once per step here; piped, it is drawn at
    # its start and end (and every 15 s, which 40 tiny steps do not reach).
    assert 1 <= training <= 3, proc.stderr[-2000:]
    assert re.search(r"^round 1: acc \d\.\d{3}", proc.stdout, re.M), proc.stdout
    assert len(proc.stdout.splitlines()) < 40  # the results, not progress, are what stdout holds
