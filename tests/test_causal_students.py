"""Decoder-only students end to end: a causal student that has learnt a trivially learnable mapping
must produce the label (not an empty string) in the training loop's evaluation and through the
plain lm_eval CLI on its checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LM_EVAL = str(Path(sys.executable).with_name("lm_eval"))

# Four questions whose answer is a fixed code: learnt by heart in a few dozen steps. Train and test
# hold the same questions on purpose: the test is about generation, not generalisation.
CODES = {"red": "7", "blue": "3", "green": "9", "black": "5"}


def _write_task(folder: Path) -> Path:
    rows = [
        {
            "id": f"c-{colour}",
            "question": f"What is the code of {colour}?",
            "answer": code,
            "samples": [f"The code of {colour} is {code}. The answer is {code}."] * 2,
        }
        for colour, code in CODES.items()
    ]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps(dict(r, id=f"{r['id']}-{split}")) + "\n" for r in rows)
        )
    spec = folder / "codes.yaml"
    spec.write_text(
        "name: codes\nanswer_type: number\nfiles:\n  train: train.jsonl\n  test: test.jsonl\n"
        "fields:\n  question: question\n  answer: answer\n  samples: samples\n"
    )
    return spec


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory):
    from qcrd_plugin.config import load_config
    from qcrd_plugin.training import run

    folder = tmp_path_factory.mktemp("codes")
    spec = _write_task(folder)
    cfg = load_config(
        None,
        [
            "task.name=custom",
            f"task.spec={spec}",
            "task.heldout=1",
            "teacher.kind=pool",
            "teacher.samples=2",
            "method.name=dss",
            "student.family=causal",
            "training.rounds=1",
            "training.steps_per_round=120",
            "training.batch_size=3",
            "training.learning_rate=0.003",
            "training.warmup_steps=5",
            "evaluation.faithfulness=false",
            f"output_dir={folder / 'runs'}",
            "name=causal",
        ],
    )
    records = run(cfg, progress=False, log=lambda _: None)
    return folder / "runs" / "causal", spec, records


def test_causal_student_states_its_label_in_the_loop(causal_run):
    run_dir, _, records = causal_run
    rows = [json.loads(line) for line in (run_dir / "round_1" / "rationales.jsonl").read_text().splitlines()]
    assert all(row["label_generation"].strip() for row in rows), rows
    assert records[-1]["eval"]["qcrd_custom"]["acc"] >= 0.75  # 3 of the 4 memorised codes at least
    assert [row["label_generation"].strip() for row in rows if row["label_generation"].strip() == row["answer"]]


@pytest.mark.slow
def test_causal_student_states_its_label_through_the_plain_lm_eval_cli(causal_run, tmp_path):
    run_dir, spec, records = causal_run
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [
        LM_EVAL,
        "--model",
        "hf",
        "--model_args",
        f"pretrained={run_dir / 'round_1'}",
        "--tasks",
        "qcrd_custom",
        "--include_path",
        str(REPO / "tasks"),
        "--device",
        "cpu",
        "--batch_size",
        "8",
        "--log_samples",
        "--metadata",
        json.dumps({"spec": str(spec)}),
        "--output_path",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(sorted((tmp_path / "out").rglob("results_*.json"))[-1].read_text())
    assert results["results"]["qcrd_custom"]["acc,none"] == pytest.approx(records[-1]["eval"]["qcrd_custom"]["acc"])
    samples = [
        json.loads(line)
        for line in sorted((tmp_path / "out").rglob("samples_qcrd_custom_*.jsonl"))[-1].read_text().splitlines()
    ]
    assert all(s["resps"][0][0].strip() for s in samples)
