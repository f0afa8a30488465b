"""Image statistics of the oracle: neighbour correlation, column variance, expected crop colour spread."""

from __future__ import annotations

import math

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.oracle.field import GaussianField
from multidiffusion.core.oracle.stats import column_variance, expected_crop_colour_variance, neighbour_correlation


def test_statistics_helpers_on_known_data():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(64, 3, 8, 40, generator=g, dtype=torch.float64)
    assert neighbour_correlation(white).abs().max() < 0.1
    assert (column_variance(white) - 1).abs().max() < 0.1
    doubled = white.repeat_interleave(2, dim=-1)  # columns 2k and 2k + 1 are equal
    r = neighbour_correlation(doubled, torch.zeros(64, 3, dtype=torch.float64))
    assert torch.allclose(r[0::2], torch.ones(40, dtype=torch.float64))


def test_expected_crop_colour_variance():
    """Crops far apart (ℓ = 0.01 px: independent pixels) have crop means of variance σ² / crop²."""
    field = GaussianField(length_scale=0.01, sigma=0.5)
    assert math.isclose(expected_crop_colour_variance(field, 8, 32, 4), 0.25 / 16, rel_tol=1e-9)


def test_expected_crop_colour_variance_needs_two_crops():
    with pytest.raises(InvalidInputError, match="need at least two 16-px crops, got 1 on a 16×20 image; use a smaller"):
        expected_crop_colour_variance(GaussianField(), 16, 20, 16)
