"""Real file systems that refuse writes (issue 15): a read-only folder and a full disk.

Each command runs inside its own mount namespace (``unshare --user --map-root-user --mount``)
over a fresh tmpfs: mounted read-only, or 8 KB, 1 MB or 13 MB in size, so the disk really fills up at
whatever write comes first (a pool, a checkpoint). No root is needed where the kernel allows
unprivileged user namespaces; where it does not (some CI containers), the tests are skipped with
that reason printed, and the same failures stay covered through ``QCRD_FAULT`` in test_resume.py.

What must hold: one line on stderr and no traceback; exit code 2 for a folder the user gave that
cannot be written, exit code 1 for a disk that filled up; no half-written file or
``.round_<k>.partial/`` left behind; every round written before the disk filled up is intact and
the run continues from it with ``--resume`` once there is space.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("qcrd-bench"))
# The test_resume.py run, on the simulated teacher: 2 rounds, a checkpoint of about 6 MB each.
RUN = [
    "task.n_train=24",
    "task.n_valid=8",
    "task.n_test=12",
    "training.rounds=2",
    "training.steps_per_round=4",
    "training.iteration_steps=2",
    "training.batch_size=8",
    "training.warmup_steps=1",
    "judge.pretrain_steps=1",
    "judge.online_every=2",
    "negatives.j_back=1",
    "negatives.max_new_tokens=16",
    "evaluation.batch_size=32",
    "evaluation.faithfulness=false",
    "evaluation.overlap=false",
    "teacher.kind=simulated",
]
OVERRIDES = [arg for o in RUN for arg in ("-o", o)]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def on_tmpfs(mount_point: Path, options: str, argv: list[str], then: str = "") -> subprocess.CompletedProcess:
    """Run ``argv`` with a fresh tmpfs (mount ``options``) at ``mount_point``, in a private mount
    namespace, then the shell command ``then`` (to copy out what the run left) before the tmpfs goes."""
    script = f'mount -t tmpfs -o {options} tmpfs "$0" || exit 97; "$@"; code=$?; {then or ":"}; exit $code'
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(mount_point), *argv],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )


@pytest.fixture(scope="module")
def tmpfs_allowed(tmp_path_factory) -> None:
    """Skip (with the reason) where this kernel or container forbids the namespace or the mount."""
    if shutil.which("unshare") is None:
        pytest.skip("no `unshare` on this machine: the real read-only and full-disk file systems cannot be made")
    point = tmp_path_factory.mktemp("probe")
    probe = on_tmpfs(point, "size=64k", ["true"])
    if probe.returncode != 0:
        pytest.skip(f"unprivileged tmpfs mounts are not allowed here ({probe.stderr.strip()[:200]})")


def one_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "real_accelerator.py" not in line]
    assert proc.returncode == code, f"exit code {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert all(needle in lines[0] for needle in needles), lines[0]
    return lines[0]


def test_a_read_only_folder_is_refused_before_any_work(tmp_path, tmpfs_allowed, figures):
    mount = tmp_path / "ro"
    mount.mkdir()
    proc = on_tmpfs(mount, "ro", [CLI, "run", "--quiet", "--output-dir", str(mount / "runs"), *OVERRIDES])
    one_line(proc, 2, "qcrd-bench: error: output_dir", "Read-only file system")
    proc = on_tmpfs(
        mount,
        "ro",
        [CLI, "teach", "--task", "synth", "--teacher", "simulated", "--quiet", "--out", str(mount / "pool.jsonl")],
    )
    one_line(proc, 2, "qcrd-bench: error: --out", "not writable")
    figures("bad_inputs_tried", 2)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["1m", "13m"])  # fills up in round 1, in round 2 (5 MB: as 1 MB)
def test_a_full_disk_stops_with_one_line_and_keeps_every_finished_round(size, tmp_path, tmpfs_allowed, figures):
    """1 MB fills up in round 1's checkpoint (5 MB too, in torch's state file rather than the
    weights: the same path), 13 MB in round 2's: the run stops with exit code 1 and no partial folder is left;
    with 13 MB a copy of what was left (the space freed) resumes from round 1 to the end."""
    mount, kept = tmp_path / "disk", tmp_path / "kept"
    mount.mkdir()
    run_dir = mount / "runs" / "default"
    proc = on_tmpfs(
        mount,
        f"size={size}",
        [CLI, "run", "--quiet", "--output-dir", str(mount / "runs"), *OVERRIDES],
        then=f'cp -a "{run_dir}" "{kept}"',
    )
    line = one_line(proc, 1, "qcrd-bench: stopped: could not write the round", "--resume")
    figures("faults_injected")
    assert not list(kept.glob(".round_*.partial")) and not list(kept.glob("**/*.tmp")), sorted(kept.rglob("*"))
    finished = sorted(p.name for p in kept.glob("round_*"))
    assert finished == ([] if size != "13m" else ["round_1"]), (finished, line)
    if finished:  # resuming without a round is a fresh start, which test_resume.py covers
        assert "the newest intact checkpoint is round_1/" in line
        resumed = subprocess.run(
            [CLI, "run", "--quiet", "--resume", str(kept)], capture_output=True, text=True, env=ENV, timeout=600
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert len((kept / "metrics.jsonl").read_text().splitlines()) == 2
    else:
        assert "there is no earlier checkpoint" in line
    figures("faults_survived")


def test_a_full_disk_while_writing_a_pool_stops_with_one_line(tmp_path, tmpfs_allowed, figures):
    """8 KB: the run stops on its first pool, teach on its output; nothing half-written stays."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = on_tmpfs(
        mount,
        "size=8k",
        [CLI, "run", "--quiet", "--output-dir", str(mount / "runs"), *OVERRIDES],
        then=f'ls -A "{mount}/runs/default" > "{tmp_path}/left.txt"',
    )
    one_line(proc, 1, "qcrd-bench: stopped: cannot write", "pool_train.jsonl", "No space left on device", "--resume")
    assert not [name for name in (tmp_path / "left.txt").read_text().split() if name.endswith(".tmp")]
    proc = on_tmpfs(
        mount,
        "size=8k",
        [CLI, "teach", "--task", "synth", "--teacher", "simulated", "--quiet", "--out", str(mount / "pool.jsonl")],
        then=f'ls -A "{mount}" > "{tmp_path}/left.txt"',
    )
    one_line(proc, 1, "qcrd-bench: stopped: --out: cannot write", "No space left on device")
    assert (tmp_path / "left.txt").read_text().split() == []
    figures("faults_injected", 2)
    figures("faults_survived", 2)
