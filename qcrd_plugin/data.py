"""Training examples: questions, gold labels and rationale sets, tokenized once up front.

Token ids are kept as Python lists and padded per batch, so no text is re-tokenized in the loop.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import torch

from .answers import CHOICE_LETTERS, stated_answer
from .questions import Question
from .rationales import Selection
from .students import EXPLAIN_PREFIX, PREDICT_PREFIX


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
    answer_type: str = "number"
    choices: list[str] | None = None
    answer_text: str = ""  # the gold answer as written after "So the answer is"


COT_INSTRUCTION = 'Answer the question. Reason step by step, then end with "So the answer is <answer>."'


def answer_text(question: Question) -> str:
    """The gold answer as written at the end of a chain of thought ("(b) populated areas", "42")."""
    if question.answer_type == "choice" and question.choices:
        index = CHOICE_LETTERS.index(question.answer)
        return f"({question.answer}) {question.choices[index]}"
    return question.answer


def cot_target(question: Question) -> str:
    """A worked answer: the gold rationale, then "So the answer is X." (the few-shot exemplar)."""
    rationale = question.gold_rationale.strip()
    if rationale and stated_answer(rationale, question.answer_type, question.choices, require_phrase=True) is not None:
        rationale = re.split(r"(?i)\s*(?:so )?the answer is", rationale)[0].strip()
    return f"{rationale} So the answer is {answer_text(question)}.".strip()


def cot_prompt(question: str, exemplars: list[Question] = ()) -> str:
    """The few-shot chain-of-thought prompt used by LLM teachers and the ``qcrd_*_cot`` tasks."""
    shots = "".join(f"Q: {ex.question}\nA: {cot_target(ex)}\n\n" for ex in exemplars)
    return f"{shots}Q: {question}\nA:"


def predict_prompt(question: str) -> str:
    """The label prompt (also used by the ``qcrd_synth`` lm-eval task)."""
    return PREDICT_PREFIX + question


def explain_prompt(question: str) -> str:
    """The rationale prompt (also used by the ``qcrd_synth_explain`` lm-eval task)."""
    return EXPLAIN_PREFIX + question


def one_line(rationale: str) -> str:
    """A teacher rationale as the student is taught to write it: its lines joined by single spaces.

    Every ``qcrd_*_explain`` task stops the student's generation at the first newline (``until:
    ["\\n"]``, as lm-eval's generate_until tasks do), so a student trained on an LLM's multi-line
    chain (MCC-KD's gpt-3.5 chains put one step per line) would be scored on its first step alone.
    """
    return re.sub(r"\s*\n\s*", " ", rationale.strip())


def build_examples(
    problems: list[Question], selections: list[Selection], tokenizer, max_input: int, max_target: int
) -> list[TrainExample]:
    """Tokenize every prompt, label and rationale of the training set once.

    Prompts are encoded as lm-eval encodes a context (:func:`prompt_ids`), targets as
    :func:`target_ids` (ending with EOS), rationales as one line (:func:`one_line`), so the student
    trains on exactly what it is scored on;
    the tokenizer itself says what a prompt carries, for both student families.
    """
    by_id = {s.id: s for s in selections}
    examples = []
    for problem in problems:
        sel = by_id[problem.id]
        examples.append(
            TrainExample(
                id=problem.id,
                predict_ids=prompt_ids(tokenizer, [predict_prompt(problem.question)], max_input)[0],
                explain_ids=prompt_ids(tokenizer, [explain_prompt(problem.question)], max_input)[0],
                label_ids=target_ids(tokenizer, [problem.answer], max_target)[0],
                positives=target_ids(tokenizer, [one_line(r) for r in sel.positives], max_target),
                llm_negatives=target_ids(tokenizer, [one_line(r) for r in sel.negatives], max_target),
                answer_type=problem.answer_type,
                choices=problem.choices,
                answer_text=answer_text(problem),
            )
        )
    return examples


def prompt_ids(tokenizer, texts: list[str], limit: int) -> list[list[int]]:
    """Token ids of prompts with the tokenizer's default special tokens, which is what lm-eval's
    ``hf`` model feeds the student at evaluation: T5 appends ``</s>`` to its encoder input, a
    causal LM's tokenizer adds a BOS or nothing (the target then continues the prompt directly).

    A prompt over ``limit`` tokens loses its middle, never its end: the choices block and the
    question's last sentence come last (and lm-eval, too, keeps a long context's end). Count
    such prompts with :func:`long_prompts` to warn about them."""
    head = limit // 4
    return (
        [
            ids if len(ids) <= limit else ids[:head] + ids[len(ids) - (limit - head) :]
            for ids in tokenizer(texts)["input_ids"]
        ]
        if texts
        else []
    )


def long_prompts(tokenizer, questions: list[Question], limit: int) -> int:
    """How many of ``questions`` have an ``explain:`` prompt over ``limit`` tokens (cut by :func:`prompt_ids`)."""
    return (
        sum(len(ids) > limit for ids in tokenizer([explain_prompt(q.question) for q in questions])["input_ids"])
        if questions
        else 0
    )


def target_ids(tokenizer, texts: list[str], limit: int) -> list[list[int]]:
    """Token ids of targets (labels, rationales): the text without any special token, cut to
    ``limit - 1`` tokens, then EOS, whatever the tokenizer adds by default (a Llama tokenizer would
    prepend BOS, and a causal student must learn to stop)."""
    if not texts:
        return []
    eos = tokenizer.eos_token_id
    return [ids[: limit - 1] + [eos] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def pad(
    sequences: list[list[int]], pad_id: int, device: torch.device | str = "cpu", left: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into (ids, attention_mask) tensors: on the right, or on the left (prompts
    that a decoder-only model continues). One scatter of the concatenated tokens through the
    mask, not a tensor per row: a QCRD step pads ~100 rationales at once, and a per-row loop pays
    Python and tensor-creation overhead for every one of them (measured: docs/performance.md)."""
    lengths = torch.tensor([len(s) for s in sequences])
    width = int(lengths.max())
    columns = torch.arange(width)
    mask = columns >= (width - lengths)[:, None] if left else columns < lengths[:, None]
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    ids[mask] = torch.tensor(
        list(itertools.chain.from_iterable(sequences)), dtype=torch.long
    )  # row-major = sequence order
    mask = mask.long()
    if torch.device(device).type == "cuda":
        # Page-locked host memory lets the copy overlap with the GPU work already queued.
        return ids.pin_memory().to(device, non_blocking=True), mask.pin_memory().to(device, non_blocking=True)
    return ids.to(device), mask.to(device)


def pad_labels(sequences: list[list[int]], device: torch.device | str = "cpu") -> torch.Tensor:
    """Right-pad target token lists with -100 (ignored by the cross-entropy)."""
    ids, mask = pad(sequences, 0, device)
    return ids.masked_fill(mask == 0, -100)
