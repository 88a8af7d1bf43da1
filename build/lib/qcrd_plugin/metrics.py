"""Rationale-quality and label metrics, shared by the lm-eval tasks and the training loop."""

from __future__ import annotations

from typing import Sequence

from .answers import answers_match, predicted_answer, stated_answer, step_validity


def label_metrics(
    prediction: str,
    gold: str,
    answer_type: str = "number",
    choices: Sequence[str] | None = None,
    pattern: str = "",
    case_fold: bool = True,
) -> dict[str, float]:
    """Metrics of a ``predict:`` generation: ``acc`` (its answer equals gold)."""
    return {"acc": float(answers_match(predicted_answer(prediction, answer_type, choices, pattern, case_fold), gold))}


def rationale_metrics(
    rationale: str,
    label_prediction: str,
    gold: str,
    answer_type: str = "number",
    choices: Sequence[str] | None = None,
    require_phrase: bool = False,
    pattern: str = "",
    case_fold: bool = True,
    question: str = "",
) -> dict[str, float]:
    """Metrics of an ``explain:`` generation, given the same question's ``predict:`` generation.

    - ``acc``: the label prediction is right (as in the label task)
    - ``rationale_acc``: the answer the rationale states equals gold
    - ``step_validity`` (number answers only): share of its ``a op b = c`` steps that are
      arithmetically right (0 for a rationale with no step at all)
    - ``consistency``: the label prediction equals the rationale's stated answer
    - ``rationale_words``: length in whitespace-separated words
    """
    stated = stated_answer(rationale, answer_type, choices, require_phrase, pattern, case_fold, question)
    label = predicted_answer(label_prediction, answer_type, choices, pattern, case_fold)
    metrics = {
        "acc": float(answers_match(label, gold)),
        "rationale_acc": float(answers_match(stated, gold)),
        "consistency": float(answers_match(label, stated)),
        "rationale_words": float(len(rationale.split())),
    }
    if answer_type == "number":
        validity = step_validity(rationale)
        metrics["step_validity"] = 0.0 if validity is None else validity
    return metrics


def cot_metrics(
    generation: str,
    gold: str,
    answer_type: str = "number",
    choices: Sequence[str] | None = None,
    pattern: str = "",
    case_fold: bool = True,
    question: str = "",
) -> dict[str, float]:
    """Metrics of a few-shot chain-of-thought generation: ``acc`` of the answer after its last
    answer statement (``qcrd_plugin.answers.stated_answer``)."""
    stated = stated_answer(generation, answer_type, choices, pattern=pattern, case_fold=case_fold, question=question)
    return {"acc": float(answers_match(stated, gold))}
