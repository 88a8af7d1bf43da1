"""What makes a round folder shareable: a machine-readable record of how it was trained and
evaluated (``qcrd_run.json``) and a Hugging Face model card (``README.md``).

The record carries the run's task settings (family, source, data directory or spec, generator
settings) in the shape of ``evaluation.task_metadata``. The ``qcrd_*`` lm-eval tasks read it
when ``--model_args pretrained=<round folder>`` points at such a folder and no task settings come
with ``--metadata``, so the plain lm-eval CLI scores the test set the student was evaluated on
(MCC-KD's SVAMP questions for a run on MCC-KD, not DSbS's).
"""

from __future__ import annotations

import json
from pathlib import Path

RUN_RECORD = "qcrd_run.json"
RECORD_FORMAT = "qcrd-run-record/1"


def run_record(cfg, round_index: int) -> dict:
    """The record written into ``round_<k>/``: method, teacher, task metadata and the whole config."""
    from .evaluation import default_tasks, task_metadata

    return {
        "format": RECORD_FORMAT,
        "run": cfg.name,
        "round": round_index,
        "method": cfg.method.name,
        "teacher": {"kind": cfg.teacher.kind, "model": cfg.teacher.model, "samples": cfg.teacher.samples,
                    "temperature": cfg.teacher.temperature},
        "evaluation_tasks": list(cfg.evaluation.tasks or default_tasks(cfg.task.name)),
        "task_metadata": task_metadata(cfg.task),
        "config": cfg.to_dict(),
    }


def recorded_task(folder) -> dict | None:
    """The ``run_task`` metadata recorded in a round folder, or None when ``folder`` is not one
    (a hub id, a folder without a record, an unreadable record)."""
    if not isinstance(folder, (str, Path)) or not str(folder):
        return None
    path = Path(str(folder)).expanduser() / RUN_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    run_task = (record.get("task_metadata") or {}).get("run_task")
    return run_task if isinstance(run_task, dict) else None


def model_card(record: dict, metrics: dict, folder: Path) -> str:
    """A Hugging Face model card (``README.md``) for a round folder: how it was distilled, the
    round's scores, and the commands that evaluate it."""
    cfg, task = record["config"], record["task_metadata"]["run_task"]
    family, source = task["name"], task.get("source") or "default"
    teacher = record["teacher"]
    teacher_text = f"{teacher['kind']}" + (f" ({teacher['model']})" if teacher.get("model") else "")
    scores = "\n".join(f"| {name} | {metric} | {value:.4f} |" for name, values in sorted(metrics.get("eval", {}).items())
                       for metric, value in sorted(values.items()) if isinstance(value, (int, float)))
    tasks = ",".join(record["evaluation_tasks"])
    backend = "causal" if cfg["student"]["family"] in ("llama", "gpt2") else "seq2seq"
    return f"""---
library_name: transformers
tags:
- qcrd-bench
- rationale-distillation
- {record['method']}
---

# {record['run']}, round {record['round']}

A student distilled with qcrd-bench (method `{record['method']}`; QCRD is arXiv:2405.13014) on task `{family}` from source `{source}`.

- Teacher: {teacher_text}, {teacher['samples']} rationales per question at temperature {teacher['temperature']}
- Student: `{cfg['student']['family']}` trained from scratch ({cfg['training']['rounds']} rounds of
  {cfg['training']['steps_per_round']} steps, batch {cfg['training']['batch_size']}, seed {cfg['training']['seed']})
- The whole configuration is in `qcrd_run.json` (`config`), with the task settings the
  `qcrd_*` lm-eval tasks read from it.

## Scores after this round (lm-eval, in the training loop)

| task | metric | value |
|---|---|---|
{scores}

## Evaluate it

```bash
lm_eval --model hf --model_args pretrained={folder},backend={backend} \\
        --tasks {tasks} --include_path "$(qcrd-bench tasks-path)"
```

Without `--metadata`, the `qcrd_*` tasks read `qcrd_run.json` here and score the test set this
student was evaluated on ({family} from {source}). Pass `--metadata` to score another.
"""
