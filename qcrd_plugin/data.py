"""Training examples: questions, gold labels and rationale sets, tokenized once up front.

Token ids are kept as Python lists and padded per batch, so no text is re-tokenized in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .rationales import Selection
from .students import EXPLAIN_PREFIX, PREDICT_PREFIX
from .synth import Problem


@dataclass
class TrainExample:
    """One question as the methods see it."""

    id: str
    predict_ids: list[int]  # "predict: <question></s>"
    explain_ids: list[int]  # "explain: <question></s>"
    label_ids: list[int]  # gold label "<answer></s>" (L_pred is trained on gold, paper §1.4)
    positives: list[list[int]] = field(default_factory=list)
    llm_negatives: list[list[int]] = field(default_factory=list)
    student_negatives: list[list[int]] = field(default_factory=list)  # refreshed during training


def predict_prompt(question: str) -> str:
    """The label prompt (also used by the ``qcrd_synth`` lm-eval task)."""
    return PREDICT_PREFIX + question


def explain_prompt(question: str) -> str:
    """The rationale prompt (also used by the ``qcrd_synth_explain`` lm-eval task)."""
    return EXPLAIN_PREFIX + question


def build_examples(problems: list[Problem], selections: list[Selection], tokenizer, max_input: int, max_target: int) -> list[TrainExample]:
    """Tokenize every prompt, label and rationale of the training set once."""
    def enc(texts: list[str], limit: int) -> list[list[int]]:
        if not texts:
            return []
        return tokenizer(texts, truncation=True, max_length=limit)["input_ids"]

    by_id = {s.id: s for s in selections}
    examples = []
    for problem in problems:
        sel = by_id[problem.id]
        examples.append(TrainExample(
            id=problem.id,
            predict_ids=enc([predict_prompt(problem.question)], max_input)[0],
            explain_ids=enc([explain_prompt(problem.question)], max_input)[0],
            label_ids=enc([problem.answer], max_target)[0],
            positives=enc(sel.positives, max_target),
            llm_negatives=enc(sel.negatives, max_target),
        ))
    return examples


def pad(sequences: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (ids, attention_mask) tensors."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def pad_labels(sequences: list[list[int]], device: torch.device | str = "cpu") -> torch.Tensor:
    """Right-pad target token lists with -100 (ignored by the cross-entropy)."""
    ids, mask = pad(sequences, 0, device)
    return ids.masked_fill(mask == 0, -100)
