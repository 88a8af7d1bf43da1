"""A wheel install works away from the checkout (issue 17): the task YAMLs and the shipped
configs are package data, `qcrd-bench` finds them, and the plain lm-eval CLI scores a student
with `--include_path $(qcrd-bench tasks-path)`.

The wheel is built from a copy of this checkout (`pip wheel --no-deps --no-build-isolation`, no network)
and installed without dependencies into a fresh virtual environment, which borrows the
dependencies (torch, transformers, lm-eval, ...) of the test environment through a .pth line, so
nothing is downloaded. Every command runs from an empty folder outside the repository, so the
checkout cannot be found by accident: the package, its tasks and its configs come from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "task.n_train=24",
    "task.n_valid=8",
    "task.n_test=12",
    "training.rounds=1",
    "training.steps_per_round=2",
    "training.batch_size=8",
    "judge.pretrain_steps=2",
    "negatives.max_new_tokens=8",
    "evaluation.batch_size=32",
    "evaluation.faithfulness=false",
    "evaluation.overlap=false",
]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(python, qcrd-bench, lm_eval, a clean working folder) of a fresh venv holding only the wheel."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ beside the sources, which must not land in the checkout.
    source = root / "src"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"
    )
    shutil.copytree(REPO, source, symlinks=True, ignore=skip)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((root / "dist").glob("qcrd_bench-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The test environment's dependencies, appended after the venv's own site-packages (which then
    # wins for qcrd_plugin: the editable install's finder in the test environment is not loaded).
    (Path(purelib) / "borrowed_deps.pth").write_text(
        "\n".join([sysconfig.get_paths()["purelib"], *site.getsitepackages()]) + "\n"
    )
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = root / "elsewhere"
    work.mkdir()
    return python, venv / "bin" / "qcrd-bench", work


def in_env(argv: list, work: Path, **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QCRD_TASKS_DIR")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=work, env=env, timeout=600)


@pytest.mark.slow
def test_a_wheel_install_runs_and_evaluates_away_from_the_checkout(wheel_env):
    python, cli, work = wheel_env
    where = in_env([python, "-c", "import qcrd_plugin, sys; print(qcrd_plugin.__file__)"], work)
    assert where.returncode == 0 and not where.stdout.strip().startswith(str(REPO)), where.stdout + where.stderr
    tasks_path = in_env([cli, "tasks-path"], work)
    assert tasks_path.returncode == 0 and (Path(tasks_path.stdout.strip()) / "qcrd_synth").is_dir(), tasks_path.stderr
    assert not tasks_path.stdout.strip().startswith(str(REPO))
    # A shipped config by name, and a run that ends with its lm-eval scores.
    args = [cli, "run", "--config", "default", "--output-dir", work / "runs", "--name", "w", "--quiet"]
    done = in_env(args + [a for o in TINY for a in ("-o", o)], work)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((work / "runs" / "w" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "acc" in record["eval"]["qcrd_synth"]
    # The plain lm-eval CLI on the saved round, with the installed package's tasks.
    scored = in_env(
        [
            python,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={work / 'runs' / 'w' / 'round_1'},backend=seq2seq",
            "--tasks",
            "qcrd_synth",
            "--include_path",
            tasks_path.stdout.strip(),
            "--device",
            "cpu",
            "--batch_size",
            "32",
            "--limit",
            "12",
            "--metadata",
            json.dumps({"n_test": 12}),
        ],
        work,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "qcrd_synth" in scored.stdout and "acc" in scored.stdout
