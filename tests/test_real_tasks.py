"""The real task families and tasks brought as data, through the plain CLIs (lm_eval, qcrd-bench)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES
from helpers import invoke

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATA = os.environ.get("QCRD_DATA_DIR", str(REPO.parent / "shared" / "data"))
SPEC = REPO / "harness_configs" / "tasks" / "shop_math.yaml"
needs_data = pytest.mark.skipif(
    not Path(DATA).is_dir(), reason="the shared data directory is not beside the repository"
)


def cli(*args, env=None, cwd=REPO, timeout=600):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "QCRD_DATA_DIR": DATA, **(env or {})}
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout
    )


def lm_eval(model_args: str, tasks: str, out: Path, *extra, env=None):
    proc = cli(
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        model_args,
        "--tasks",
        tasks,
        "--include_path",
        str(REPO / "tasks"),
        "--device",
        "cpu",
        "--batch_size",
        "16",
        "--output_path",
        str(out),
        *extra,
        env=env,
    )
    return proc


def results_of(out: Path) -> dict:
    return json.loads(sorted(out.rglob("results_*.json"))[-1].read_text())


@needs_data
@pytest.mark.slow
def test_lm_eval_cli_scores_the_real_families_and_the_qcrd_group(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    proc = lm_eval(
        f"pretrained={run_dir / 'round_2'},backend=seq2seq",
        "qcrd,qcrd_svamp_explain",
        tmp_path / "out",
        "--limit",
        "3",
        "--metadata",
        json.dumps({"source": {"svamp": "mcc_kd"}}),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = results_of(tmp_path / "out")
    for family in ("svamp", "cqa", "anli1", "esnli", "strategyqa", "gsm8k"):
        assert results["n-samples"][f"qcrd_{family}"]["effective"] == 3
    assert "acc,none" in results["results"]["qcrd"]  # the group's aggregate
    assert {"rationale_acc,none", "step_validity,none", "consistency,none"} <= set(
        results["results"]["qcrd_svamp_explain"]
    )


@needs_data
@pytest.mark.slow
def test_a_round_folder_records_its_task_so_plain_lm_eval_scores_its_test_set(tmp_path, monkeypatch):
    """A run on MCC-KD's SVAMP: its round folder holds a model card and qcrd_run.json, and the
    plain lm-eval CLI without --metadata scores MCC-KD's test questions (not DSbS's, the family's
    default source); --metadata still chooses another."""
    from qcrd_plugin.config import TaskConfig
    from qcrd_plugin.tasks import load_task

    tests = {
        source: len(load_task(TaskConfig(name="svamp", source=source, data_dir=DATA)).questions["test"])
        for source in ("mcc_kd", "dsbs")
    }
    assert tests["mcc_kd"] != tests["dsbs"]
    small = [
        "task.max_train=24",
        "teacher.kind=pool",
        "training.rounds=1",
        "training.steps_per_round=2",
        "judge.pretrain_steps=2",
        "evaluation.limit=4",
        "evaluation.faithfulness=false",
        "evaluation.overlap=false",
    ]
    # qcrd-bench in this process (its imports paid once); lm_eval, the subject, in its own below.
    monkeypatch.setenv("QCRD_DATA_DIR", DATA)
    proc = invoke(
        "run",
        "--task",
        "svamp",
        "-o",
        "task.source=mcc_kd",
        "--output-dir",
        str(tmp_path),
        "--name",
        "svamp_mcckd",
        "--quiet",
        *[a for o in small for a in ("-o", o)],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "svamp_mcckd" / "round_1"
    card = (folder / "README.md").read_text()
    assert (
        card.startswith("---\nlibrary_name: transformers")
        and "from source `mcc_kd`" in card
        and "| qcrd_svamp | acc |" in card
    )
    assert json.loads((folder / "qcrd_run.json").read_text())["task_metadata"]["run_task"]["source"] == "mcc_kd"
    # Exported for the hub: the record travels with the weights, the training state does not.
    exported = tmp_path / "export"
    proc = invoke("export", str(tmp_path / "svamp_mcckd"), "--round", "best", "--out", str(exported))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"model.safetensors", "README.md", "qcrd_run.json"} <= {f.name for f in exported.iterdir()}
    assert not (exported / "training_state.pt").exists() and "test-split score" in (exported / "README.md").read_text()
    bad = invoke("export", str(tmp_path / "svamp_mcckd"), "--round", "9", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--round 9" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert (exported / "qcrd_run.json").read_bytes() == (folder / "qcrd_run.json").read_bytes()  # the record travels
    # (--metadata wins over the record: test_lm_eval_cli_scores_the_real_families_and_the_qcrd_group.)
    proc = lm_eval(f"pretrained={folder},backend=seq2seq", "qcrd_svamp", tmp_path / "out", "--limit", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results_of(tmp_path / "out")["n-samples"]["qcrd_svamp"]["original"] == tests["mcc_kd"]


@needs_data
@pytest.mark.slow
def test_cot_variant_runs_with_a_causal_model(tmp_path):
    from test_teachers import tiny_causal_lm

    model = tiny_causal_lm(tmp_path / "gpt2")
    proc = lm_eval(
        f"pretrained={model}",
        "qcrd_gsm8k_cot",
        tmp_path / "out",
        "--limit",
        "2",
        "--num_fewshot",
        "1",
        "--gen_kwargs",
        "max_gen_toks=8",
        "--log_samples",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results_of(tmp_path / "out")["n-samples"]["qcrd_gsm8k_cot"]["effective"] == 2
    sample = json.loads(
        sorted((tmp_path / "out").rglob("samples_qcrd_gsm8k_cot_*.jsonl"))[-1].read_text().splitlines()[0]
    )
    prompt = sample["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.count("Q: ") == 2 and "So the answer is" in prompt  # one exemplar + the question


@pytest.mark.slow
def test_missing_data_stops_lm_eval_with_one_message(tmp_path):
    from test_teachers import tiny_causal_lm

    model = tiny_causal_lm(tmp_path / "gpt2")
    proc = lm_eval(
        f"pretrained={model}", "qcrd_svamp", tmp_path / "out", env={"QCRD_DATA_DIR": str(tmp_path / "nowhere")}
    )
    assert proc.returncode == 2
    assert "QCRD_DATA_DIR" in proc.stderr and "qcrd-bench data prepare --task svamp" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_data
def test_data_prepare_prints_the_counts_of_sources_md(tmp_path):
    proc = cli("qcrd-bench", "data", "prepare", "--task", "svamp", "--source", "mcc_kd", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[2]: line.split() for line in proc.stdout.splitlines() if line.startswith("svamp")}
    assert rows["train"][3:6] == ["700", "700", "7000"] and rows["test"][3] == "150"
    written = tmp_path / "svamp-mcc_kd"
    assert len((written / "questions_train.jsonl").read_text().splitlines()) == 700
    assert len((written / "pool_train.jsonl").read_text().splitlines()) == 700


def test_task_brought_as_data_teach_run_and_lm_eval(tmp_path, monkeypatch):
    # qcrd-bench in this process (its imports paid once); lm_eval, the subject, in its own below.
    monkeypatch.setenv("QCRD_DATA_DIR", DATA)
    pool = tmp_path / "shop_pool.jsonl"
    proc = invoke(
        "teach",
        "--task",
        "custom",
        "--spec",
        str(SPEC),
        "--teacher",
        "pool",
        "-k",
        "3",
        "--out",
        str(pool),
    )
    assert proc.returncode == 0, proc.stderr
    assert "pool statistics" in proc.stdout and len(pool.read_text().splitlines()) == 100
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("task.")]
    args = [
        "run",
        "--task",
        "custom",
        "-o",
        f"task.spec={SPEC}",
        "-o",
        "teacher.kind=pool",
        "-o",
        f"teacher.pool={pool}",
        "-o",
        "teacher.samples=3",
        "--output-dir",
        str(tmp_path / "runs"),
        "--name",
        "shop",
        "--quiet",
        "-o",
        "student.max_input_tokens=20",
    ]  # shop prompts are 22 tokens: the run must say it cuts them
    for o in overrides:
        args += ["-o", o]
    proc = invoke(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(
        r"warning: \d+ of 100 prompts are longer than student.max_input_tokens=20 tokens and lose their middle",
        proc.stdout + proc.stderr,
    ), proc.stdout[-3000:]
    record = json.loads((tmp_path / "runs" / "shop" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["eval"]) == {"qcrd_custom", "qcrd_custom_explain"}
    proc = lm_eval(
        f"pretrained={tmp_path / 'runs' / 'shop' / 'round_2'},backend=seq2seq",
        "qcrd_custom",
        tmp_path / "out",
        "--metadata",
        json.dumps({"spec": str(SPEC)}),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = results_of(tmp_path / "out")
    assert results["results"]["qcrd_custom"]["acc,none"] == pytest.approx(record["eval"]["qcrd_custom"]["acc"])
    assert results["n-samples"]["qcrd_custom"]["effective"] == 40
