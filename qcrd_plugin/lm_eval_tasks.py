"""lm-eval glue for every ``qcrd_*`` task in ``tasks/`` (referenced from the YAMLs as
``!function qcrd_plugin.lm_eval_tasks.<name>``). Nothing is re-implemented here: questions come
from ``qcrd_plugin.tasks`` and scoring from ``qcrd_plugin.metrics``, exactly as in training.

Task metadata (YAML ``metadata:``, ``--metadata`` on the CLI, or the run's task config in the
training loop under ``run_task``) chooses the data: ``family`` (set by each YAML), ``source``,
``source`` may also map families to sources (``{"svamp": "mcc_kd"}``), ``data_dir`` (else
``$QCRD_DATA_DIR``), ``spec`` (custom tasks, else ``$QCRD_TASK_SPEC``) and the synthetic
generator's keys.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from datasets import Dataset, DatasetDict
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from .config import TaskConfig
from .data import cot_prompt, explain_prompt, predict_prompt
from .data import cot_target as _cot_target
from .errors import UserInputError
from .metrics import cot_metrics, label_metrics, rationale_metrics
from .model_card import recorded_task
from .questions import Question
from .tasks import fill_gold_rationales, load_task

SPEC_ENV = "QCRD_TASK_SPEC"


def _task_config(metadata: dict) -> TaskConfig:
    """The task settings: the run's (``run_task``, in the training loop), else ``--metadata``'s,
    else those recorded in the round folder lm-eval scores (``pretrained=``, or ``peft=`` for a LoRA
    round; model_card.py)."""
    family = metadata.get("family", "synth")
    fields = {f.name for f in dataclasses.fields(TaskConfig)}
    run_task = metadata.get("run_task") or {}
    if not run_task and not any(key in fields for key in metadata):
        run_task = recorded_task(metadata.get("peft") or metadata.get("pretrained")) or {}  # peft=: a LoRA round
    options = run_task if run_task.get("name") == family else metadata
    values = {k: v for k, v in options.items() if k in fields and k != "name" and v not in (None, "")}
    if isinstance(values.get("source"), dict):  # --metadata '{"source": {"svamp": "mcc_kd"}}': per family
        values["source"] = values["source"].get(family, "")
    if family == "custom" and not values.get("spec"):
        values["spec"] = os.environ.get(SPEC_ENV, "")
    return TaskConfig(name=family, **values)


def load_dataset(**metadata) -> DatasetDict:
    """The task's splits as lm-eval docs (canonical question records).

    A missing data file or a bad task spec stops the CLI with one message (exit code 2) that
    says which setting to fix, instead of a traceback from deep inside lm-eval.
    """
    cfg = _task_config(metadata)
    if cfg.name == "custom" and not cfg.spec:
        _stop(
            "qcrd_custom tasks need a task spec: "
            f'--metadata \'{{"spec": "harness_configs/tasks/<name>.yaml"}}\' or ${SPEC_ENV}'
        )
    try:
        data = load_task(cfg)
    except UserInputError as err:  # missing data, a bad spec, an unknown source
        _stop(str(err))
    fill_gold_rationales(data)
    return DatasetDict(
        {
            split: Dataset.from_list([q.to_record() for q in questions])
            for split, questions in data.questions.items()
            if questions
        }
    )


def _stop(message: str) -> None:
    print(f"qcrd tasks: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _question(doc: dict) -> Question:
    return Question.from_record(doc)


def predict_text(doc: dict) -> str:
    return predict_prompt(doc["question"])


def explain_text(doc: dict) -> str:
    return explain_prompt(doc["question"])


def cot_text(doc: dict) -> str:
    """The zero-shot part of the chain-of-thought prompt; lm-eval prepends the few-shot exemplars."""
    return cot_prompt(doc["question"])


def cot_target(doc: dict) -> str:
    return " " + _cot_target(_question(doc))


def _reading(doc: dict) -> dict:
    """How this task reads answers beyond type and choices (a custom spec's pattern, case folding)."""
    return {"pattern": doc.get("answer_pattern") or "", "case_fold": doc.get("case_fold", True) is not False}


def process_predict(doc: dict, results: list[str]) -> dict[str, float]:
    return label_metrics(
        results[0], doc["answer"], doc.get("answer_type", "number"), doc.get("choices"), **_reading(doc)
    )


def process_explain(doc: dict, results: list[str]) -> dict[str, float]:
    label_generation, rationale = results
    return rationale_metrics(
        rationale,
        label_generation,
        doc["answer"],
        doc.get("answer_type", "number"),
        doc.get("choices"),
        bool(doc.get("require_answer_phrase")),
        **_reading(doc),
        question=doc["question"],
    )


def process_cot(doc: dict, results: list[str]) -> dict[str, float]:
    return cot_metrics(
        results[0],
        doc["answer"],
        doc.get("answer_type", "number"),
        doc.get("choices"),
        **_reading(doc),
        question=doc["question"],
    )


class ExplainTask(ConfigurableTask):
    """Asks each question twice, ``predict:`` then ``explain:``, so that ``process_results`` can
    score the rationale against the student's own label (rationale-label consistency)."""

    def __init__(self, config: dict | None = None, **kwargs):
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        super().__init__(config=config, **kwargs)

    def construct_requests(self, doc: dict, ctx: str, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        gen = dict(self.config.generation_kwargs)
        label_request = Instance(
            "generate_until", doc, (predict_text(doc), dict(gen, max_gen_toks=16)), idx=0, **kwargs
        )
        rationale_request = Instance("generate_until", doc, (ctx, gen), idx=1, **kwargs)
        return [label_request, rationale_request]
