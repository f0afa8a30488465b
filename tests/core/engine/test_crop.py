"""Flat indices of the views' cells (core.engine.crop.view_indices): bad views are refused with one clear line."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import InvalidInputError, View, view_indices


def test_indices_wrap_around_the_canvas():
    (row,) = view_indices([View(1, 3, 2, 2)], 2, 4)
    assert torch.equal(row, torch.tensor([7, 4, 3, 0]))  # rows 1, 0 and columns 3, 0 (wrapped)


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ([], "no views given; give at least one view"),
        ([View(0, 0, 2, 2), View(0, 1, 2, 3)], r"one size, got \(height, width\) \[\(2, 2\), \(2, 3\)\]"),
        ([View(0, 4, 2, 2)], "a view starts outside the 3×4 canvas; tops must be in 0…2, lefts in 0…3"),
        ([View(-1, 0, 2, 2)], "a view starts outside the 3×4 canvas"),
        ([View(0, 0, 4, 2)], "a 4×2 view is larger than the 3×4 canvas; a view must fit in it"),
    ],
)
def test_bad_views_are_refused(views, message):
    with pytest.raises(InvalidInputError, match=message):
        view_indices(views, 3, 4)
