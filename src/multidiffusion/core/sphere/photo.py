"""A normal photograph placed on the sphere (photo to 360°, docs/sphere.md): the equirectangular canvas the photo
covers, and where, for a photo with a horizontal field of view taken looking at an orientation (yaw, pitch, roll).

Each canvas pixel's direction is carried into the photo's camera (:func:`~.projection.rotation`), projected on its
image plane (a pinhole: x = f · right/forward, y = f · up/forward, f = (w / 2) / tan(fov / 2)) and the photo is sampled
there bilinearly. The pixels whose directions land inside the photo are known; the run draws the rest."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.sphere.projection import Orientation, cell_directions, rotation

MAX_PHOTO_FOV = 170.0  # degrees: a pinhole camera's field of view must stay below 180°


def photo_on_sphere(photo: Tensor, height: int, fov: float, orientation: Orientation) -> tuple[Tensor, Tensor]:
    """Place ``photo`` (1, 3, h, w) in [−1, 1] on an H × 2H equirectangular canvas, ``height`` = H px.

    Args:
        photo: The photograph, float (1, 3, h, w).
        height: The canvas height H in pixels (its width is 2H).
        fov: The photo's horizontal field of view, degrees, in (0, :data:`MAX_PHOTO_FOV`].
        orientation: Where the photo's centre looks (yaw = longitude, pitch = latitude, roll), degrees.

    Returns:
        (canvas (1, 3, H, 2H) float32: the photo where it lands, 0 elsewhere; known (1, 1, H, 2H) float32: 1 where a
        canvas pixel's direction lands inside the photo, else 0).
    """
    if photo.ndim != 4 or photo.shape[:2] != (1, 3):
        raise InvalidInputError(f"the photo must be (1, 3, h, w), got shape {tuple(photo.shape)}")
    if not (math.isfinite(fov) and 0.0 < fov <= MAX_PHOTO_FOV):
        raise InvalidInputError(f"the photo's field of view must be in (0, {MAX_PHOTO_FOV:g}] degrees, got {fov}")
    _, _, h, w = photo.shape
    world = cell_directions(height)  # (H, 2H, 3): unit directions of the canvas pixels
    camera = world @ rotation(orientation)  # camera = Rᵀ world, row-wise: (right, up, forward)
    right, up, forward = camera[..., 0], camera[..., 1], camera[..., 2]
    focal = (w / 2.0) / math.tan(math.radians(fov) / 2.0)
    ahead = forward > 1e-9
    safe = torch.where(ahead, forward, torch.ones_like(forward))
    col = w / 2.0 + focal * right / safe  # continuous pixel coordinates: 0 at the left edge, w at the right
    row = h / 2.0 - focal * up / safe
    inside = ahead & (col >= 0) & (col <= w) & (row >= 0) & (row <= h)
    # grid_sample's normalised coordinates with align_corners=False: −1 and 1 are the outer edges of the photo
    grid = torch.stack([col / w * 2.0 - 1.0, row / h * 2.0 - 1.0], dim=-1).to(torch.float32)[None]
    grid = torch.where(inside[None, ..., None], grid, torch.zeros_like(grid))
    sampled = F.grid_sample(photo.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    known = inside.to(torch.float32)[None, None]
    return sampled * known, known
