"""A photo placed on the sphere (core/sphere/photo.py): where it lands and what it shows there."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.sphere.photo import photo_on_sphere
from multidiffusion.core.sphere.projection import Orientation


def _ramp(h: int = 48, w: int = 64) -> torch.Tensor:
    """A photo whose red channel is its column's centre in [−1, 1], green its row's."""
    cols = (torch.arange(w) + 0.5) / w * 2 - 1
    rows = (torch.arange(h) + 0.5) / h * 2 - 1
    return torch.stack([cols[None, :].expand(h, w), rows[:, None].expand(h, w), torch.zeros(h, w)])[None]


def test_a_90_degree_photo_ahead_covers_a_quarter_of_the_equator():
    canvas, known = photo_on_sphere(_ramp(), 128, 90.0, Orientation(0.0, 0.0))
    assert canvas.shape == (1, 3, 128, 256) and known.shape == (1, 1, 128, 256)
    row = known[0, 0, 64]
    assert row.nonzero().min().item() == 96 and row.nonzero().max().item() == 159  # longitudes −45°…45°
    # left to right across the photo, its column ramp, bilinearly: increasing, from near −1 to near 1
    red = canvas[0, 0, 64, 96:160]
    assert bool((red[1:] > red[:-1]).all()) and red[0] < -0.9 and red[-1] > 0.9
    assert canvas[0, :, known[0, 0] == 0].abs().max() == 0  # nothing outside the photo


def test_yaw_and_pitch_move_the_photo():
    _, ahead = photo_on_sphere(_ramp(), 128, 60.0, Orientation(0.0, 0.0))
    _, turned = photo_on_sphere(_ramp(), 128, 60.0, Orientation(90.0, 0.0))
    assert torch.equal(torch.roll(ahead, 64, dims=3), turned)  # a quarter turn: 64 of 256 columns
    _, up = photo_on_sphere(_ramp(), 128, 60.0, Orientation(0.0, 45.0))
    rows = up[0, 0].sum(dim=1).nonzero()
    assert rows.min().item() < 40 and rows.max().item() < 64  # above the equator


def test_bad_photos_and_fovs_are_refused():
    with pytest.raises(InvalidInputError, match="field of view"):
        photo_on_sphere(_ramp(), 128, 180.0, Orientation(0.0, 0.0))
    with pytest.raises(InvalidInputError, match="must be"):
        photo_on_sphere(torch.zeros(3, 8, 8), 128, 90.0, Orientation(0.0, 0.0))
