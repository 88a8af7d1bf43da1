"""Shared fixtures: a tiny run config and one reduced end-to-end run reused by several tests."""

from __future__ import annotations

import os
from collections import Counter

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N` by hand: one thread per worker, as `make test` sets
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# A run small enough for CI: 2 rounds of a few steps on a few questions.
TINY_OVERRIDES = [
    "task.n_train=48",
    "task.n_valid=16",
    "task.n_test=24",
    "training.rounds=2",
    "training.steps_per_round=6",
    "training.iteration_steps=3",
    "training.batch_size=8",
    "training.warmup_steps=2",
    "judge.pretrain_steps=5",
    "judge.online_every=2",
    "negatives.j_back=1",
    "negatives.max_new_tokens=24",
    "evaluation.batch_size=32",
    "evaluation.faithfulness_items=4",
]


def synth_training_set(cfg, temperature: float):
    """A small training set for unit tests: ``cfg.task``'s synthetic train questions, a pool of 5
    simulated-teacher samples each at ``temperature``, and a fresh tiny student of
    ``cfg.student.family``. Returns (model, tokenizer, examples)."""
    from qcrd_plugin.data import build_examples
    from qcrd_plugin.rationales import select_pool
    from qcrd_plugin.students import build_student
    from qcrd_plugin.synth import generate
    from qcrd_plugin.teachers import SimulatedTeacher

    problems = generate(cfg.task)["train"]
    pool = SimulatedTeacher(cfg.teacher).sample(problems, 5, temperature)
    model, tok = build_student(
        cfg.student, [p.question for p in problems] + [s.rationale for e in pool for s in e.samples]
    )
    examples = build_examples(
        [p.to_question() for p in problems], select_pool(pool, cfg.self_consistency), tok, 128, 96
    )
    return model, tok, examples


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One reduced QCRD run end to end; returns (run_dir, records)."""
    from qcrd_plugin.config import load_config
    from qcrd_plugin.training import run

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, TINY_OVERRIDES + [f"output_dir={out}", "name=tiny"])
    records = run(cfg, progress=False, log=lambda _: None)
    return out / "tiny", records


# The reliability suite's figures (tests/reliability, issue 6): every test there records what it
# tried through the ``figures`` fixture; the session ends by printing kills survived, faults
# injected and survived, bad inputs tried, and bytes of data lost (asserted to be zero). They live
# in the top-level conftest because under pytest-xdist only this one is loaded by the controller,
# which adds up the workers' counts.

FIGURES: Counter = Counter()
FIGURE_LABELS = {
    "kills_survived": "kills survived (SIGKILL, then --resume, same final metrics)",
    "faults_injected": "faults injected",
    "faults_survived": "faults survived (retried, or stopped cleanly with nothing lost)",
    "bad_inputs_tried": "bad inputs tried (exit code 2 + one message, or a counted skip)",
    "bytes_lost": "bytes of data lost",
}


def record(figure: str, count: int = 1) -> None:
    """Add ``count`` to one of the suite's figures (keys of FIGURE_LABELS)."""
    if figure not in FIGURE_LABELS:
        raise KeyError(figure)
    FIGURES[figure] += count


@pytest.fixture
def figures():
    """The :func:`record` function, for tests that prefer a fixture to an import."""
    return record


def pytest_sessionfinish(session):
    """Under pytest-xdist (``make test`` runs two workers) each worker counts its own tests: it
    hands its figures to the controller, which adds them up in :func:`pytest_testnodedown`."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability_figures"] = dict(FIGURES)


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_WorkerFigures())


class _WorkerFigures:
    """The controller's side of :func:`pytest_sessionfinish` (a class, so pytest does not check
    the xdist-only hook where xdist is not installed)."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        FIGURES.update(getattr(node, "workeroutput", {}).get("reliability_figures", {}))


def pytest_terminal_summary(terminalreporter):
    if not any(FIGURES.values()):
        return
    terminalreporter.section("reliability figures")
    for key, label in FIGURE_LABELS.items():
        terminalreporter.write_line(f"{label:<70} {FIGURES[key]:>8}")
