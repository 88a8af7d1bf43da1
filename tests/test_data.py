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
