"""Crops for the coherence metrics (core.metrics.coherence.crop_grid): what it refuses."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.metrics.coherence import crop_grid


def test_crops_are_row_major():
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6)
    crops = crop_grid(image, 2)
    assert crops.shape == (6, 2, 2, 2) and torch.equal(crops[1], image[:, :2, 2:4])


def test_a_batch_is_refused():
    with pytest.raises(InvalidInputError, match=r"expected an image \(C, H, W\), got shape \(1, 3, 8, 8\)"):
        crop_grid(torch.zeros(1, 3, 8, 8), 4)
