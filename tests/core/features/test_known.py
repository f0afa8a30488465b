"""Known regions (core.features.known): a pixel mask as a mask of latent cells."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.features.known import latent_mask


def test_a_cell_holds_the_known_fraction_of_its_pixels():
    mask = torch.zeros(1, 1, 4, 8)
    mask[..., :, :3] = 1.0
    assert torch.equal(latent_mask(mask, 2), torch.tensor([[[[1.0, 0.5, 0.0, 0.0]] * 2]]))


def test_a_mask_without_its_channel_axis_is_refused():
    with pytest.raises(InvalidInputError, match=r"a mask must be \(N, 1, H, W\), got shape \(1, 4, 8\)"):
        latent_mask(torch.zeros(1, 4, 8), 2)
