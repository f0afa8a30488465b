"""Extra input channels per view (core.features.channels.ConcatChannels)."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import InvalidInputError, View
from multidiffusion.core.features.channels import ConcatChannels


def test_each_row_gets_its_views_crop_of_the_extra_channels():
    extra = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    seen = []

    def inner(x, t, conds, views=None):
        seen.append(x)  # (B, C + C', h, w): what the wrapped denoiser receives
        return x[:, :1]

    views = [View(0, 0, 2, 2), View(2, 2, 2, 2)]
    ConcatChannels(inner, extra)(torch.zeros(2, 1, 2, 2), torch.tensor(1), ["a", "b"], views)
    assert torch.equal(seen[0][0, 1], extra[0, 0, :2, :2]) and torch.equal(seen[0][1, 1], extra[0, 0, 2:, 2:])


def test_extra_channels_must_be_four_dimensional():
    with pytest.raises(InvalidInputError, match=r"extra channels must be \(N, C', H, W\), got shape \(1, 4, 4\)"):
        ConcatChannels(lambda x, t, conds, views=None: x, torch.zeros(1, 4, 4))
