"""Run options of issue 17: a finetune run asks no teacher, evaluation.select: validation picks
the round on the run's validation questions, and any lm-eval task (here a plain YAML task outside
ours, through evaluation.include_path) is scored after every round."""

from __future__ import annotations

import json

from conftest import TINY_OVERRIDES

from qcrd_plugin.config import load_config
from qcrd_plugin.evaluation import on_questions, task_manager
from qcrd_plugin.leaderboard import read_run
from qcrd_plugin.model_card import export_round, pick_round
from qcrd_plugin.synth import generate
from qcrd_plugin.training import run

# A plain lm-eval task, nothing of ours in it: local JSON lines, lm-eval's exact_match.
LOCAL_TASK = """task: local_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "predict: {{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def test_finetune_asks_no_teacher_selects_on_validation_and_scores_a_plain_lm_eval_task(tmp_path):
    tasks = tmp_path / "my_tasks"
    tasks.mkdir()
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a} + {a}", "answer": str(2 * a)}) + "\n" for a in range(5)))
    (tasks / "local_sums.yaml").write_text(LOCAL_TASK.format(data=data))
    overrides = [
        "method.name=finetune",
        "evaluation.select=validation",
        "evaluation.tasks=qcrd_synth,qcrd_synth_explain,local_sums",  # lm-eval's comma list
        f"evaluation.include_path=[{tasks}]",
        f"output_dir={tmp_path}",
        "name=ft",
    ]
    lines = []
    records = run(load_config(None, TINY_OVERRIDES + overrides), progress=False, log=lines.append)
    run_dir = tmp_path / "ft"

    # No teacher: no pool written, and the log says why.
    assert "teacher: not asked (method finetune trains on the gold labels alone)" in lines
    assert not list(run_dir.glob("pool_*.jsonl")) and records[0]["pool"] == {}

    # The plain lm-eval task was scored every round beside ours.
    assert all(r["eval"]["local_sums"]["exact_match"] is not None for r in records)
    assert all("acc" in r["eval"]["qcrd_synth"] for r in records)

    # The selected round is the best validation accuracy so far (the earliest of equals), and it
    # is what the leaderboard reports and `export --round best` takes.
    for k in range(1, len(records) + 1):
        scored = [(r["validation_acc"], -r["round"]) for r in records[:k]]
        assert records[k - 1]["selected_round"] == -max(scored)[1]
    chosen = records[-1]["selected_round"]
    assert read_run(run_dir).final["round"] == chosen
    assert pick_round(run_dir, "best") == chosen
    export_round(run_dir, "best", tmp_path / "export")
    assert "validation questions" in (tmp_path / "export" / "README.md").read_text()


def test_validation_scoring_reads_the_run_validation_questions_not_the_test_split():
    cfg = load_config(None, TINY_OVERRIDES)
    questions = generate(cfg.task)["validation"]
    manager = task_manager({})
    task = on_questions(manager, "qcrd_synth", questions)
    assert [d["id"] for d in task.eval_docs] == [q.id for q in questions]
    fresh = manager.load(["qcrd_synth"])["tasks"]["qcrd_synth"]
    test_ids = {d["id"] for d in fresh.eval_docs}
    assert test_ids and not test_ids & {q.id for q in questions}
