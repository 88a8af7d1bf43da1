"""Rationale-quality and label metrics, shared by the lm-eval tasks and the training loop."""

from __future__ import annotations

from .answers import answers_match, parse_label, parse_stated_answer, step_validity


def label_metrics(prediction: str, gold: str) -> dict[str, float]:
    """Metrics of a ``predict:`` generation: ``acc`` (its first number equals gold)."""
    return {"acc": float(answers_match(parse_label(prediction), gold))}


def rationale_metrics(rationale: str, label_prediction: str, gold: str) -> dict[str, float]:
    """Metrics of an ``explain:`` generation, given the same question's ``predict:`` generation.

    - ``acc``: the label prediction is right (as in ``qcrd_synth``)
    - ``rationale_acc``: the answer the rationale states equals gold
    - ``step_validity``: share of its ``a op b = c`` steps that are arithmetically right
      (0 for a rationale with no step at all)
    - ``consistency``: the label prediction equals the rationale's stated answer
    - ``rationale_words``: length in whitespace-separated words
    """
    stated = parse_stated_answer(rationale)
    validity = step_validity(rationale)
    return {
        "acc": float(answers_match(parse_label(label_prediction), gold)),
        "rationale_acc": float(answers_match(stated, gold)),
        "step_validity": 0.0 if validity is None else validity,
        "consistency": float(answers_match(parse_label(label_prediction), stated)),
        "rationale_words": float(len(rationale.split())),
    }


RATIONALE_METRICS = ("acc", "rationale_acc", "step_validity", "consistency", "rationale_words")
