"""``modiff.pad_token_rows``: the padding every text embedder shares."""

from __future__ import annotations

import torch

import modiff


def test_rows_are_padded_to_the_longest_with_a_mask_of_real_tokens() -> None:
    ids, mask = modiff.pad_token_rows([[5, 6, 7], [8], []], pad=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert ids.dtype == torch.long and mask.dtype == torch.bool


def test_min_length_holds_for_short_and_empty_batches() -> None:
    ids, mask = modiff.pad_token_rows([[1]], pad=9, min_length=2)
    assert ids.tolist() == [[1, 9]] and mask.tolist() == [[True, False]]
    ids, mask = modiff.pad_token_rows([], pad=9)
    assert ids.shape == (0, 1) and mask.shape == (0, 1)


def test_truncation_cuts_every_long_row_and_warns_once_naming_the_longest() -> None:
    import pytest

    with pytest.warns(modiff.TruncationWarning, match=r"2 prompt\(s\) have up to 5 words; .*max_tokens = 3") as caught:
        rows = modiff.truncate_token_rows([[1, 2, 3, 4], [1], [1, 2, 3, 4, 5]], 3, what="words")
    assert len(caught) == 1
    assert rows == [[1, 2, 3], [1], [1, 2, 3]]


def test_rows_that_fit_are_returned_without_a_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert modiff.truncate_token_rows([[1, 2], []], 2) == [[1, 2], []]
