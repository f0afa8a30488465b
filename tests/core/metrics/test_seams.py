"""Seam statistics (core.metrics.seams): the axis argument."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import InvalidInputError, View
from multidiffusion.core.metrics.seams import edge_pairs, wrap_correlation


def test_a_bad_axis_is_refused():
    with pytest.raises(InvalidInputError, match="axis must be 'x' or 'y', got 'z'"):
        edge_pairs([View(0, 0, 4, 4)], 8, axis="z")
    with pytest.raises(InvalidInputError, match="axis must be 'x' or 'y', got 'z'"):
        wrap_correlation(torch.zeros(1, 3, 4, 8), axis="z")
