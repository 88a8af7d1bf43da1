"""Batch padding: the vectorised pad() against the row-by-row definition."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from qcrd_plugin.data import pad, pad_labels

token_lists = st.lists(st.lists(st.integers(2, 300), min_size=0, max_size=12), min_size=1, max_size=8).filter(
    lambda s: any(s)
)


@given(token_lists, st.booleans())
def test_pad_places_every_token_and_masks_exactly_the_padding(sequences, left):
    ids, mask = pad(sequences, 0, left=left)
    width = max(map(len, sequences))
    assert ids.shape == mask.shape == (len(sequences), width)
    for row, seq in enumerate(sequences):
        padding = [0] * (width - len(seq))
        expected = padding + seq if left else seq + padding
        assert ids[row].tolist() == expected
        assert mask[row].tolist() == (
            [0] * len(padding) + [1] * len(seq) if left else [1] * len(seq) + [0] * len(padding)
        )


def test_pad_labels_ignores_the_padding():
    labels = pad_labels([[5, 6, 1], [7, 1]])
    assert labels.tolist() == [[5, 6, 1], [7, 1, -100]] and labels.dtype == torch.long


def test_multi_line_rationales_train_as_one_line_as_the_explain_tasks_score_them():
    """An LLM's chain with one step per line (MCC-KD's gpt-3.5 style) becomes a one-line target:
    every qcrd_*_explain task stops generation at the first newline, so a multi-line target would
    teach the student a rationale that is scored on its first step alone."""
    from pathlib import Path

    import yaml

    from qcrd_plugin.config import StudentConfig
    from qcrd_plugin.data import build_examples
    from qcrd_plugin.questions import Question
    from qcrd_plugin.rationales import Selection
    from qcrd_plugin.students import build_student

    tasks = Path(__file__).resolve().parents[1] / "tasks"
    stops = {
        path.name: yaml.safe_load(path.read_text().replace("!function", ""))["generation_kwargs"]["until"]
        for path in tasks.glob("*/*_explain.yaml")
    }
    assert len(stops) >= 8 and all(until == ["\n"] for until in stops.values()), stops
    chain = "He had 5 + 3 = 8 apples.\nHe ate 2, so 8 - 2 = 6 remain.\n\nThe answer is 6."
    question = Question("q1", "He had 5 apples and got 3 more. He ate 2. How many remain?", "6", "number")
    _, tok = build_student(StudentConfig(family="causal"), [question.question, chain])
    (example,) = build_examples([question], [Selection("q1", "6", [chain], [chain])], tok, 64, 64)
    for target in example.positives + example.llm_negatives:
        text = tok.decode(target, skip_special_tokens=True)
        assert "\n" not in text and text.split() == chain.split()
