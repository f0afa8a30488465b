"""The weight-free perceptual distance (core.metrics.statistics_loss): shapes it takes."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.metrics.statistics_loss import image_statistics, statistics_distance


def test_identical_images_are_at_distance_zero():
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(statistics_distance(images, images), torch.zeros(2))


def test_bad_shapes_are_refused():
    with pytest.raises(InvalidInputError, match=r"expected images \(B, 3, H, W\), got shape \(2, 1, 8, 8\)"):
        image_statistics(torch.zeros(2, 1, 8, 8))
    message = r"images \(2, 3, 8, 8\) and targets \(1, 3, 8, 8\) differ in shape; both must be \(B, 3, H, W\)"
    with pytest.raises(InvalidInputError, match=message):
        statistics_distance(torch.zeros(2, 3, 8, 8), torch.zeros(1, 3, 8, 8))
