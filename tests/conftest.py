"""Shared fixtures: a tiny run config and one reduced end-to-end run reused by several tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
