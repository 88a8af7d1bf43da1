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


def run_record(cfg, round_index: int, seq2seq: bool) -> dict:
    """The record written into ``round_<k>/``: method, teacher, task metadata, the student's
    lm-eval backend (``seq2seq``: read from the model, since a pretrained one decides its family)
    and the whole config."""
    from .evaluation import default_tasks, task_metadata
    from .lora import base_reference

    return {
        "format": RECORD_FORMAT,
        "run": cfg.name,
        "round": round_index,
        "method": cfg.method.name,
        "teacher": {
            "kind": cfg.teacher.kind,
            "model": cfg.teacher.model,
            "samples": cfg.teacher.samples,
            "temperature": cfg.teacher.temperature,
        },
        "backend": "seq2seq" if seq2seq else "causal",
        # A LoRA round holds the adapter alone: lm-eval loads the base from here (pretrained=) and it (peft=).
        "base_model": base_reference(cfg, Path(cfg.output_dir) / cfg.name) if cfg.student.lora_rank else None,
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
    scores = "\n".join(
        f"| {name} | {metric} | {value:.4f} |"
        for name, values in sorted(metrics.get("eval", {}).items())
        for metric, value in sorted(values.items())
        if isinstance(value, (int, float))
    )
    tasks = ",".join(record["evaluation_tasks"])
    backend = record.get("backend") or ("causal" if cfg["student"]["family"] == "causal" else "seq2seq")
    base = record.get("base_model")
    model_args = f"pretrained={base},peft={folder}" if base else f"pretrained={folder}"
    origin = (
        f"fine-tuned from `{cfg['student']['pretrained']}`" if cfg["student"]["pretrained"] else "trained from scratch"
    )
    if base:
        origin += f"; LoRA adapters of rank {cfg['student']['lora_rank']} on the frozen base `{base}`"
    return f"""---
library_name: transformers
tags:
- qcrd-bench
- rationale-distillation
- {record["method"]}
---

# {record["run"]}, round {record["round"]}

A student distilled with qcrd-bench (method `{record["method"]}`; QCRD is arXiv:2405.13014)
on task `{family}` from source `{source}`.

- Teacher: {teacher_text}, {teacher["samples"]} rationales per question at temperature {teacher["temperature"]}
- Student: `{cfg["student"]["family"]}` {origin} ({cfg["training"]["rounds"]} rounds of
  {cfg["training"]["steps_per_round"]} steps, batch {cfg["training"]["batch_size"]}, seed {cfg["training"]["seed"]})
- The whole configuration is in `qcrd_run.json` (`config`), with the task settings the
  `qcrd_*` lm-eval tasks read from it.

## Scores after this round (lm-eval, in the training loop)

| task | metric | value |
|---|---|---|
{scores}

## Evaluate it

```bash
lm_eval --model hf --model_args {model_args},backend={backend} \\
        --tasks {tasks} --include_path "$(qcrd-bench tasks-path)"
```

Without `--metadata`, the `qcrd_*` tasks read `qcrd_run.json` here and score the test set this
student was evaluated on ({family} from {source}). Pass `--metadata` to score another.
"""


def best_round(records: list[dict], key: str) -> int:
    """The round whose ``key`` (``validation_acc``, ``headline_acc``) is highest: the earliest of
    equals, a round without the score counting as the worst. ``evaluation.select: validation``
    records it as ``selected_round``; ``export --round best`` picks with it."""
    scored = [(r[key] if r.get(key) is not None else -1.0, -r["round"]) for r in records]
    return -max(scored)[1]


def pick_round(run_dir: Path, which: str) -> int:
    """The round ``which`` names in a finished run: a number, ``last``, or ``best``: the highest
    validation accuracy when the run scored its validation questions (``evaluation.select:
    validation``), else the highest headline accuracy in metrics.jsonl, a test-split score, so
    then ``best`` is a choice made on the test set, and the exported card says so."""
    from .errors import UserInputError
    from .files import read_jsonl

    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise UserInputError(f"{run_dir}: not a finished run directory (no metrics.jsonl)")
    records = [record for _, record in read_jsonl(metrics)]
    rounds = [r["round"] for r in records if (run_dir / f"round_{r['round']}").is_dir()]
    if not rounds:
        raise UserInputError(f"{metrics}: no round folder of a recorded round is left")
    if which == "last":
        return rounds[-1]
    if which == "best":
        key = "validation_acc" if any("validation_acc" in r for r in records) else "headline_acc"
        return best_round([r for r in records if r["round"] in rounds], key)
    if not which.isdigit() or int(which) not in rounds:
        raise UserInputError(
            f"--round {which}: expected best, last or one of the rounds {', '.join(map(str, rounds))}"
        )
    return int(which)


def export_round(run_dir: Path, which: str, out: Path) -> Path:
    """Copy round ``which`` of ``run_dir`` into ``out`` ready for ``push_to_hub`` (or
    ``huggingface-cli upload``): weights, tokenizer, run record, lm-eval results and model card,
    without the training state or optimizer shards. Returns the round's folder."""
    import shutil

    from .errors import UserInputError
    from .files import atomic_write_text, read_jsonl

    round_index = pick_round(run_dir, which)
    source = run_dir / f"round_{round_index}"
    if out.exists() and any(out.iterdir()):
        raise UserInputError(f"--out {out}: not empty; give a new folder")
    skip = {"training_state.pt", "deepspeed", "rationales.jsonl"}
    shutil.copytree(source, out, ignore=lambda folder, names: [n for n in names if n in skip], dirs_exist_ok=True)
    record_path = source / RUN_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        metrics = next(r for _, r in read_jsonl(run_dir / "metrics.jsonl") if r["round"] == round_index)
        card = model_card(record, metrics, Path("."))
        if which == "best" and "validation_acc" in metrics:
            card += (
                "\nThis round was chosen as the best of the run by its accuracy on the run's validation questions.\n"
            )
        elif which == "best":
            card += (
                "\nThis round was chosen as the best of the run by its test-split score "
                "(a choice made on the test set; `evaluation.select: validation` makes it on validation questions).\n"
            )
        atomic_write_text(out / "README.md", card)
    return source
