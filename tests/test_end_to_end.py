"""One reduced end-to-end run: files, keys, and agreement with the plain lm_eval CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LM_EVAL = str(Path(sys.executable).with_name("lm_eval"))


def test_run_writes_every_output(tiny_run):
    run_dir, records = tiny_run
    assert (run_dir / "config.yaml").exists()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["rounds"] == 2
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == [1, 2]
    for record in lines:
        assert set(record["eval"]) == {"qcrd_synth", "qcrd_synth_explain"}
        assert {"acc", "rationale_acc", "step_validity", "consistency", "rationale_words"} <= set(
            record["eval"]["qcrd_synth_explain"]
        )
        assert 0.0 <= record["eval"]["qcrd_synth"]["acc"] <= 1.0
        assert {"l_pred", "l_cl", "l_d", "loss"} <= set(record["loss"])
        assert {"agreement_rate", "majority_eq_gold_rate", "positives_per_question", "negatives_per_question"} <= set(
            record["pool"]
        )
        assert {"training", "evaluation", "checkpoint", "negative_sampling"} <= set(record["time_s"])
        assert {"teacher_sampling", "self_consistency", "judge_pretraining"} <= set(record["setup_time_s"])
        assert record["judge_score_student"] is None or 0.0 <= record["judge_score_student"] <= 1.0
        assert 0.0 <= record["judge_auc_heldout"] <= 1.0
        assert "alpha3" in record["method_state"]
        checkpoint = run_dir / f"round_{record['round']}"
        assert (checkpoint / "config.json").exists() and (checkpoint / "tokenizer.json").exists()
        results = json.loads((checkpoint / "lm_eval_results.json").read_text())
        assert results["results"]["qcrd_synth"]["acc,none"] == pytest.approx(record["eval"]["qcrd_synth"]["acc"])
    # alpha3 decays by 0.9 per iteration: 2 iterations in round 1, 4 by the end of round 2
    assert lines[1]["method_state"]["alpha3"] == pytest.approx(0.5 * 0.9**3)
    assert records == lines


def test_checkpoint_loads_with_transformers(tiny_run):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    run_dir, _ = tiny_run
    tok = AutoTokenizer.from_pretrained(run_dir / "round_2")
    model = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "round_2")
    out = model.generate(
        **tok(["predict: Tom has 3 pens. How many pens does Tom have now?"], return_tensors="pt"), max_new_tokens=4
    )
    assert out.shape[0] == 1 and tok.eos_token == "</s>"


def _plain_lm_eval(checkpoint: Path, tmp_path: Path, tasks: str, metadata: dict) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [
        LM_EVAL,
        "--model",
        "hf",
        "--model_args",
        f"pretrained={checkpoint},backend=seq2seq",
        "--tasks",
        tasks,
        "--include_path",
        str(REPO / "tasks"),
        "--device",
        "cpu",
        "--batch_size",
        "32",
        "--metadata",
        json.dumps(metadata),
        "--output_path",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted((tmp_path / "out").rglob("results_*.json"))
    assert written, f"lm_eval wrote no results file under {tmp_path / 'out'}"
    return json.loads(written[-1].read_text())


@pytest.mark.slow
def test_plain_lm_eval_cli_agrees_with_the_in_loop_evaluation(tiny_run, tmp_path):
    run_dir, records = tiny_run
    task = yaml.safe_load((run_dir / "config.yaml").read_text())["task"]
    results = _plain_lm_eval(run_dir / "round_2", tmp_path, "qcrd_synth,qcrd_synth_explain", task)
    assert results["results"]["qcrd_synth"]["acc,none"] == pytest.approx(records[1]["eval"]["qcrd_synth"]["acc"])
    assert results["n-samples"]["qcrd_synth"]["effective"] == task["n_test"]
    explain = results["results"]["qcrd_synth_explain"]
    assert {"rationale_acc,none", "step_validity,none", "consistency,none", "rationale_words,none"} <= set(explain)


def test_task_utils_score_gold_answers_as_perfect():
    """The tasks' process_results (the code the CLI runs) on gold answers and on a wrong one."""
    from qcrd_plugin import lm_eval_tasks as utils

    data = utils.load_dataset(family="synth", n_train=2, n_valid=2, n_test=5, version=1.0, pretrained="ignored")
    doc = data["test"][0]
    assert utils.process_predict(doc, [doc["answer"]])["acc"] == 1.0
    assert utils.process_predict(doc, [str(int(doc["answer"]) + 1)])["acc"] == 0.0
    scored = utils.process_explain(doc, [doc["answer"], doc["gold_rationale"]])
    assert scored == {**scored, "acc": 1.0, "rationale_acc": 1.0, "step_validity": 1.0, "consistency": 1.0}
    # the synthetic task demands a stated answer: a rationale that trails off scores 0
    trailing = doc["gold_rationale"].rsplit(" The answer is", 1)[0]
    assert utils.process_explain(doc, [doc["answer"], trailing])["rationale_acc"] == 0.0
